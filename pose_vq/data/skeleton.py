"""The Panoptic COCO-19 skeleton: joint order, the 17 rendered limbs, left/right sets.

Joint indices follow the order of ``joints19`` in Panoptic's ``hdPose3d_stage1_coco19``
files. ``LIMBS`` are the 17 joint pairs the paper renders as heatmap channels, in the
reference implementation's channel order.
"""

from __future__ import annotations

JOINT_NAMES: tuple[str, ...] = (
    "neck",
    "nose",
    "mid-hip",
    "l-shoulder",
    "l-elbow",
    "l-wrist",
    "l-hip",
    "l-knee",
    "l-ankle",
    "r-shoulder",
    "r-elbow",
    "r-wrist",
    "r-hip",
    "r-knee",
    "r-ankle",
    "l-eye",
    "l-ear",
    "r-eye",
    "r-ear",
)
NUM_JOINTS = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {name: i for i, name in enumerate(JOINT_NAMES)}

LIMB_NAMES: tuple[tuple[str, str], ...] = (
    ("nose", "l-shoulder"),
    ("nose", "r-shoulder"),
    ("l-shoulder", "l-elbow"),
    ("l-elbow", "l-wrist"),
    ("r-shoulder", "r-elbow"),
    ("r-elbow", "r-wrist"),
    ("l-shoulder", "l-hip"),
    ("l-hip", "l-knee"),
    ("l-knee", "l-ankle"),
    ("r-shoulder", "r-hip"),
    ("r-hip", "r-knee"),
    ("r-knee", "r-ankle"),
    ("l-eye", "nose"),
    ("r-eye", "nose"),
    ("l-eye", "l-ear"),
    ("r-eye", "r-ear"),
    ("r-hip", "l-hip"),
)
LIMBS: tuple[tuple[int, int], ...] = tuple(
    (JOINT_INDEX[a], JOINT_INDEX[b]) for a, b in LIMB_NAMES
)
NUM_LIMBS = len(LIMBS)

LEFT_JOINTS: tuple[int, ...] = tuple(
    i for i, n in enumerate(JOINT_NAMES) if n.startswith("l-")
)
RIGHT_JOINTS: tuple[int, ...] = tuple(
    i for i, n in enumerate(JOINT_NAMES) if n.startswith("r-")
)
# Limbs whose both joints are on one side (used by left/right flips).
LEFT_LIMBS: tuple[int, ...] = tuple(
    i for i, (a, b) in enumerate(LIMBS) if a in LEFT_JOINTS and b in LEFT_JOINTS
)
RIGHT_LIMBS: tuple[int, ...] = tuple(
    i for i, (a, b) in enumerate(LIMBS) if a in RIGHT_JOINTS and b in RIGHT_JOINTS
)


def flip_joint_permutation() -> tuple[int, ...]:
    """Joint index permutation that swaps every left joint with its right twin."""
    perm = list(range(NUM_JOINTS))
    for i, name in enumerate(JOINT_NAMES):
        if name.startswith("l-"):
            j = JOINT_INDEX["r-" + name[2:]]
            perm[i], perm[j] = j, i
    return tuple(perm)
