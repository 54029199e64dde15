"""The training objective: separator + independency critic + memory bank → two losses.

Reads top-down: ``mixing`` (mix-and-separate: clips → mixtures) → ``objective.IALMethod``
(separator forward, −SI-SNR or weighted BCE, L_av, the adversarial term) with ``losses`` and
``critic`` (pair critic, memory bank, hinge losses); ``config.MethodConfig`` and the λ schedules.
May import the ``ial`` foundation and ``ial.models``; the trainer (``ial.training``) drives it.
"""

from ial.method.config import MethodConfig
from ial.method.objective import IALMethod

__all__ = ["IALMethod", "MethodConfig"]
