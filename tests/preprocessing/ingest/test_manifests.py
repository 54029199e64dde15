import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing.clip_index import clip_id
from preprocessing.ingest.manifests import MANIFEST_READERS, ManifestError, read_manifest


def test_registry_has_every_format():
    assert MANIFEST_READERS.names() == ["audioset", "ave", "generic", "music", "vggsound"]
    with pytest.raises(KeyError, match="unknown manifest format 'nope'"):
        read_manifest("x.csv", "nope")


def test_vggsound_quoted_labels_and_clip_ids(tmp_path):
    p = tmp_path / "vgg.csv"
    p.write_text('---g-f_I2yQ,1,"people marching, chanting",test\n'
                 "\n"
                 "--0PQM4-hqg,30,waterfall burbling,train\n")
    m = read_manifest(str(p), "vggsound", clip_seconds=10)
    assert [e.video_id for e in m] == ["---g-f_I2yQ", "--0PQM4-hqg"]
    assert m[0].label == "people marching, chanting"
    assert m[0].labels == ("people marching, chanting",)
    assert (m[0].start, m[0].end, m[0].split) == (1.0, 11.0, "test")
    assert m[1].clip_id == "--0PQM4-hqg_30000" and m[1].line == 3
    assert clip_id("abc", 1.5) == "abc_1500" and clip_id("abc", 0.0) == "abc_0"


def test_malformed_row_names_file_and_line_or_is_skipped(tmp_path):
    p = tmp_path / "vgg.csv"
    p.write_text("aaaaaaaaaaa,1,dog,train\n"
                 "bbbbbbbbbbb,notanumber,cat,train\n"
                 "ccccccccccc,2,cow\n"
                 "ddddddddddd,3,bird,test\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(str(p), "vggsound")
    assert f"{p}:2" in str(err.value) and "start_seconds" in str(err.value)
    m = read_manifest(str(p), "vggsound", skip_malformed=True)
    assert [e.video_id for e in m] == ["aaaaaaaaaaa", "ddddddddddd"]
    assert [line for line, _ in m.skipped] == [2, 3]
    assert "expected 4 fields" in m.skipped[1][1]


def test_audioset_header_mids_and_names(tmp_path):
    seg = tmp_path / "eval_segments.csv"
    seg.write_text(
        "# Segments csv created Sun Mar  5 10:54:31 2017\n"
        "# num_ytids=20371, num_segs=20371, num_unique_labels=527, num_positive_labels=51804\n"
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        '--4gqARaEJE, 0.000, 10.000, "/m/068hy,/m/07q6cd_,/m/0bt9lr,/m/0jbk"\n'
        '--BfvyPmVMo, 20.000, 30.000, "/m/03l9g"\n'
        '--U7joUcTCo, 30.000, 20.000, "/m/01b_21"\n')
    labels = tmp_path / "class_labels_indices.csv"
    labels.write_text('index,mid,display_name\n0,/m/068hy,"Domestic animals, pets"\n'
                      "1,/m/03l9g,Hammer\n")
    ontology = tmp_path / "ontology.json"
    ontology.write_text(json.dumps([{"id": "/m/0jbk", "name": "Animal"}]))
    with pytest.raises(ManifestError, match=r"eval_segments.csv:6: end_seconds"):
        read_manifest(str(seg), "audioset")
    m = read_manifest(str(seg), "audioset", labels_csv=str(labels), ontology=str(ontology),
                      split="test", skip_malformed=True)
    assert len(m) == 2 and m.skipped[0][0] == 6
    assert m[0].labels == ("Domestic animals, pets", "/m/07q6cd_", "/m/0bt9lr", "Animal")
    assert m[0].label == "Domestic animals, pets" and m[0].split == "test"
    assert (m[1].start, m[1].end, m[1].label) == (20.0, 30.0, "Hammer")
    # MIDs the given names do not know are kept as MIDs, counted and reported (not silent)
    assert m.unknown_labels == {"/m/07q6cd_": 1, "/m/0bt9lr": 1}
    assert read_manifest(str(seg), "audioset", skip_malformed=True).unknown_labels == {}


def test_music_solo_and_duet(tmp_path):
    p = tmp_path / "MUSIC_duet_videos.json"
    p.write_text(json.dumps({"videos": {"acoustic_guitar violin": ["1SH0ZWiaEEo", "7ofqeYwrmsk"],
                                        "flute": ["0oLPakdxMY4", 42]}}))
    with pytest.raises(ManifestError, match=r"videos\['flute'\]\[1\]: bad video id"):
        read_manifest(str(p), "music")
    m = read_manifest(str(p), "music", skip_malformed=True, start_seconds=5, clip_seconds=10)
    assert len(m) == 3 and m.skipped == [("videos['flute'][1]", "bad video id 42")]
    assert m[0].labels == ("acoustic_guitar", "violin") and m[0].label == "acoustic_guitar violin"
    assert (m[0].start, m[0].end) == (5.0, 15.0)
    assert {e.split for e in m} <= {"train", "val", "test"}
    assert read_manifest(str(p), "music", skip_malformed=True)[0].split == m[0].split
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  \"videos\": [\n")
    with pytest.raises(ManifestError, match=r"bad.json:\d+: invalid JSON"):
        read_manifest(str(bad), "music")


def test_generic_csv_and_parquet(tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("url,start,end,labels,split\n"
                 "/data/videos/my clip.mp4,2,7,dog;bark,val\n"
                 "https://example.org/v/abc.mp4,0,,cat,\n"
                 ",0,5,cat,train\n")
    with pytest.raises(ManifestError, match=r"list.csv:4: missing url/path"):
        read_manifest(str(p), "generic")
    m = read_manifest(str(p), "generic", skip_malformed=True, clip_seconds=4)
    assert m[0].url == "/data/videos/my clip.mp4" and m[0].video_id == "my-clip"
    assert (m[0].start, m[0].end, m[0].labels, m[0].split) == (2.0, 7.0, ("dog", "bark"), "val")
    assert (m[1].video_id, m[1].end, m[1].split) == ("abc", 4.0, "train")
    pq_path = tmp_path / "list.parquet"
    pq.write_table(pa.table({"path": ["/x/a.mp4"], "start": [1.0], "end": [3.0],
                             "labels": [["a", "b"]], "split": ["test"],
                             "video_id": ["vid_a"]}), pq_path)
    (e,) = read_manifest(str(pq_path), "generic")
    assert (e.video_id, e.labels, e.clip_id) == ("vid_a", ("a", "b"), "vid_a_1000")


def test_missing_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(str(tmp_path / "none.csv"), "vggsound")


def test_a_directory_or_non_utf8_manifest_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="is a directory"):
        read_manifest(str(tmp_path), "vggsound")
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("abc,1,violin,train\nxyz,2,cafe\xe9,train\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin1.csv:2: not UTF-8 text .*0xe9"):
        read_manifest(str(latin), "vggsound")


def test_a_gzip_manifest_is_read_and_a_truncated_one_named(tmp_path):
    import gzip

    text = '---g-f_I2yQ,1,"people marching, chanting",test\n--0PQM4-hqg,30,waterfall,train\n'
    packed = tmp_path / "vggsound.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    m = read_manifest(str(packed), "vggsound")
    assert [e.clip_id for e in m] == ["---g-f_I2yQ_1000", "--0PQM4-hqg_30000"]
    packed.write_bytes(gzip.compress(text.encode())[:30])
    with pytest.raises(ManifestError, match=r"vggsound.csv.gz: a gzip file that does not "
                                            r"decompress \(.*\); download it again"):
        read_manifest(str(packed), "vggsound")


def test_a_missing_or_corrupt_parquet_manifest_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="none.parquet: manifest file not found"):
        read_manifest(str(tmp_path / "none.parquet"), "generic")
    bad = tmp_path / "cut.parquet"
    pq.write_table(pa.table({"url": ["a.mp4"], "start": [0.0]}), bad)
    bad.write_bytes(bad.read_bytes()[:-20])  # a truncated upload
    with pytest.raises(ManifestError, match="cut.parquet: not a readable Parquet file"):
        read_manifest(str(bad), "generic")


def test_ave_annotations_with_splits_from_the_file_name(tmp_path):
    lines = ("Category&VideoID&Quality&StartTime&EndTime\n"
             "Church bell&RUhOCu3LNXM&good&0&10\n"
             "Male speech, man speaking&MHSCVsYdfM0&good&2&8\n"
             "\n")
    for name, split in (("trainSet.txt", "train"), ("valSet.txt", "val"), ("testSet.txt", "test")):
        path = tmp_path / name
        path.write_text(lines)
        m = read_manifest(str(path), "ave")
        assert [e.split for e in m] == [split, split]
        assert [(e.video_id, e.label, e.start, e.end) for e in m] == [
            ("RUhOCu3LNXM", "Church bell", 0.0, 10.0),
            ("MHSCVsYdfM0", "Male speech, man speaking", 0.0, 10.0)]  # the whole 10-s AVE video
    seg = read_manifest(str(tmp_path / "trainSet.txt"), "ave", event_segment=True)
    assert (seg[1].start, seg[1].end) == (2.0, 8.0)  # the annotated event only
    allfile = tmp_path / "Annotations.txt"
    allfile.write_text(lines)
    assert {e.split for e in read_manifest(str(allfile), "ave", split="test")} == {"test"}
    bad = tmp_path / "bad.txt"
    bad.write_text("Category&VideoID&Quality&StartTime&EndTime\nDog&abc&good&5\n")
    with pytest.raises(ManifestError, match=r"bad.txt:2: expected 5 '&'-separated fields"):
        read_manifest(str(bad), "ave")
    bad.write_text("VideoID,label\n")
    with pytest.raises(ManifestError, match="bad.txt:1: expected the AVE header"):
        read_manifest(str(bad), "ave")


def test_unknown_manifest_options_are_refused():
    from ial.config import ConfigError, load_config
    from preprocessing.ingest.config import IngestConfig

    with pytest.raises(ConfigError, match=r"'manifest_options.labels_csvv'.*audioset reader has "
                                          r"no option 'labels_csvv'.*from --set"):
        load_config(IngestConfig, None, ["manifest_format=audioset",
                                         "manifest_options.labels_csvv=x.csv"])
    cfg = load_config(IngestConfig, None, ["manifest_format=ave", "manifest_options.split=val"])
    assert cfg.manifest_options == {"split": "val"}
