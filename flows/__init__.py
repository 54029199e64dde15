"""Prefect flows only: thin wrappers over the plain functions of ``preprocessing`` and ``ial``
(each task/flow calls one of them), and the deployments (``deployments``). Flows import the
stages; no stage imports ``flows`` (only the applications ``ial.cli`` and ``ial.demo`` do)."""
