"""Interactive segmentation as a Gymnasium env: every voxel is an agent (MECCA.md §1, §3).

One episode = one volume and ``steps`` (T) interactions. Reset draws the next case, sets
``p = 0.5`` everywhere, lets the simulated user place ``initial_clicks`` and builds the hint
map. Each step applies one action per voxel, ``p <- clip(p + ACTION_VALUES[a], 0, 1)``,
scores it, and (except after the last step) the user adds ``clicks_per_step`` clicks where
the new segmentation is wrong. The segmentation is ``p > 0.5`` with config ``readout``
``"threshold"``; with ``"hold"`` a voxel at exactly 0.5 keeps its previous side
(:mod:`mecca_rllib.envs.readout`). After T steps the episode is truncated.

Observation: ``(3, D, H, W)`` float32 = (image, p, hint); with ``hint_channels=2``
``(4, D, H, W)`` = (image, p, foreground-click hint, background-click hint), the click's side
read from the label at the clicked voxel (MECCA.md §1's option). Action: ``(D, H, W)`` integers in
``[0, 6)`` (any integer dtype). Reward: the voxel mean of the cross-entropy gain
``chi(p_t) - chi(p_{t+1})`` (MECCA.md §3, eps = 1e-6) for labeled volumes; for unlabeled
volumes the label never leaves the env and the scalar reward is 0.0 (the learner computes
their rewards against simulated labels, MECCA.md §5). ``info`` at reset and every step:

- ``"label"``: uint8 ``(D, H, W)`` ground truth, labeled volumes only;
- ``"unlabeled"``: bool;
- ``"dice"``: Dice of the segmentation against the true label (monitoring only);
- ``"clicks"``: int32 ``(K, 3)`` ``(d, h, w)`` of every click so far, oldest first;
- ``"case"``: the case name; ``"step"``: interactions done (0 at reset).

Internally p is kept exactly on its 0.1 grid as integer tenths (int8), so ``p > 0.5`` is
never decided by float rounding and the reward comes from one histogram of (label, p) pairs
instead of per-voxel logarithms.
"""
from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from mecca_rllib.data import DataError, VolumeSource, augment, open_source
from mecca_rllib.envs.hints import HINT_CHANNELS, ClickHints
from mecca_rllib.envs.readout import check_readout, segmentation
from mecca_rllib.envs.rollout import step_tenths
from mecca_rllib.envs.simulated_user import ADVICE_MODES, CLICK_MODES, SimulatedUser
from mecca_rllib.envs.spaces import ACTION_VALUES, VoxelActions, VoxelObservations
from mecca_rllib.metrics import dice as dice_score

__all__ = ["DEFAULT_CONFIG", "InteractiveSegEnv"]

DEFAULT_CONFIG: dict[str, Any] = {
    "dataset": "synthetic",
    "shape": (30, 55, 55),
    "steps": 5,
    "initial_clicks": 25,
    "clicks_per_step": 5,
    "click_mode": "edge",
    "hint_kernel": 8,
    "hint_channels": 1,
    "labeled_fraction": 1.0,
    "labeled_episode_ratio": None,
    "augment": False,
    "seed": 0,
    "num_cases": 64,
    "split": "train",
    "channel": None,
    "label_value": None,
    "readout": "hold",
    "advice_mode": "only",
}

EPS = 1e-6  # probability clamp of the cross-entropy (MECCA.md §3)
_LEVELS = 11  # p in {0, 0.1, ..., 1.0}
# log q for label y and p = k/10, q = p if y == 1 else 1 - p, clamped (MECCA.md §3).
_P64 = np.clip(np.arange(_LEVELS) / 10, EPS, 1 - EPS)
_LOG_Q = np.concatenate([np.log(1 - _P64), np.log(_P64)])  # index = 11 * y + k


def _config(config: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    given = {**(config or {}), **overrides}
    unknown = sorted(set(given) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(
            f"unknown env config key(s) {unknown}; valid keys: {sorted(DEFAULT_CONFIG)}"
        )
    cfg = {**DEFAULT_CONFIG, **given}
    shape = tuple(cfg["shape"])
    if len(shape) != 3 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be three positive integers (D, H, W), got {cfg['shape']!r}")
    cfg["shape"] = tuple(int(s) for s in shape)
    minimum = {"steps": 1, "initial_clicks": 0, "clicks_per_step": 0, "hint_kernel": 1}
    for key, low in minimum.items():
        value = cfg[key]
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
        cfg[key] = int(value)
    if cfg["hint_channels"] not in HINT_CHANNELS:
        raise ValueError(f"hint_channels must be one of {HINT_CHANNELS}, got {cfg['hint_channels']!r}")
    check_readout(cfg["readout"])
    if cfg["click_mode"] not in CLICK_MODES:
        raise ValueError(f"click_mode must be one of {CLICK_MODES}, got {cfg['click_mode']!r}")
    if cfg["advice_mode"] not in ADVICE_MODES:
        raise ValueError(f"advice_mode must be one of {ADVICE_MODES}, got {cfg['advice_mode']!r}")
    if not 0.0 <= float(cfg["labeled_fraction"]) <= 1.0:
        raise ValueError(f"labeled_fraction must be in [0, 1], got {cfg['labeled_fraction']!r}")
    ratio = cfg["labeled_episode_ratio"]
    if ratio is not None and (isinstance(ratio, bool) or not 0.0 <= float(ratio) <= 1.0):
        raise ValueError(f"labeled_episode_ratio must be None or in [0, 1], got {ratio!r}")
    return cfg


class InteractiveSegEnv(gym.Env):
    """MECCA's voxel-agent environment (see the module docstring for the full contract).

    Args:
        config: a dict or RLlib ``EnvContext`` with keys from :data:`DEFAULT_CONFIG`
            (``dataset`` may also be a ready :class:`~mecca_rllib.data.VolumeSource`, whose
            own shape and labeled subset then apply). ``labeled_episode_ratio``: None
            draws cases from one permutation of all cases; a number r in [0, 1]
            interleaves labeled and unlabeled cases so that a fraction r of the episodes
            is labeled, evenly spread (r = 0.5: Algorithm 1's strict alternation,
            MECCA.md §5), each group from its own seeded per-pass permutation. With an
            ``EnvContext`` the RNG streams also depend on ``worker_index`` and
            ``vector_index``, so parallel envs with one ``seed`` see different episodes.
        **overrides: the same keys as keyword arguments (``gymnasium.make(id, steps=3)``).

    Raises:
        ValueError: an unknown or invalid config key.
        DataError: the dataset has no usable case.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: Mapping[str, Any] | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = _config(config, overrides)
        cfg = self.config
        self._stream_key = (
            int(getattr(config, "worker_index", 0) or 0),
            int(getattr(config, "vector_index", 0) or 0),
        )
        if isinstance(cfg["dataset"], VolumeSource):
            self.source = cfg["dataset"]
        else:
            self.source = open_source(
                cfg["dataset"], cfg["shape"], num_cases=cfg["num_cases"], split=cfg["split"],
                labeled_fraction=cfg["labeled_fraction"], seed=cfg["seed"],
                channel=cfg["channel"], label_value=cfg["label_value"],
            )  # fmt: skip
        if len(self.source) == 0:
            raise DataError(cfg["dataset"], "no usable case")
        self.shape: tuple[int, int, int] = tuple(int(s) for s in self.source.shape)
        channels = int(cfg["hint_channels"])
        self.observation_space = VoxelObservations(self.shape, hint_channels=channels)
        self.action_space = VoxelActions(self.shape)

        self._obs = np.zeros((2 + channels, *self.shape), np.float32)  # image, p, hint(s)
        self._hints = ClickHints(self.shape, cfg["hint_kernel"], channels, out=self._obs[2:])
        self._user = SimulatedUser(cfg["click_mode"], cfg["advice_mode"])
        self._tenths = np.full(self.shape, 5, np.int8)  # p in tenths
        self._mask = np.zeros(self.shape, bool)  # the segmentation (readout of p)
        self._slot_base = np.zeros(self.shape, np.int16)  # 11 * label
        self._label: np.ndarray | None = None
        self._unlabeled = False
        self._case = ""
        self._advice: np.ndarray | None = None
        self._step = -1  # -1: needs reset
        self._slot = (0, 1)  # (index, count) inside a vector env
        self._seed_streams(cfg["seed"])

    # ---------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode on the next case of a seeded per-pass permutation.

        ``seed`` re-seeds the env's streams (and starts a new pass); ``options={"case": i}``
        (an index or a name) serves that case instead, without advancing the permutation.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._seed_streams(seed)
        index = self._next_case(options)
        image, label = self.source.get(index, self._data_rng)
        if self.config["augment"]:
            image, label = augment(image, label, self._data_rng)
        if image.shape != self.shape or label.shape != self.shape:
            raise DataError(
                self.source.names[index],
                f"volume shape {image.shape}/{label.shape} differs from the env's {self.shape}",
            )
        self._case = self.source.names[index]
        self._unlabeled = not bool(self.source.labeled[index])
        self._label = np.ascontiguousarray(label, dtype=np.uint8).view()
        self._label.flags.writeable = False  # on our view only: info["label"] stays intact
        np.multiply(self._label, _LEVELS, out=self._slot_base)
        self._obs[0] = image
        self._tenths.fill(5)  # p = 0.5 everywhere (MECCA.md §1)
        self._obs[1] = 0.5
        self._mask.fill(False)
        self._hints.reset()
        self._advice = None
        self._user.start(self._label)
        self._step = 0
        self._log_q_mean, dice = self._score()
        self._click(self.config["initial_clicks"])
        return self._obs.copy(), self._info(dice)

    def step(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one action per voxel; returns ``(obs, reward, False, truncated, info)``."""
        if self._step < 0:
            raise RuntimeError("call reset() before step()")
        if self._step >= self.config["steps"]:
            raise RuntimeError(
                f"the episode ended after {self.config['steps']} steps; call reset()"
            )
        action = self._check_action(action)
        step_tenths(self._tenths, action, out=self._tenths)  # p <- clip(p + a, 0, 1), MECCA.md §1
        np.divide(self._tenths, np.float32(10), out=self._obs[1])  # float32(k / 10)
        self._mask = segmentation(self._tenths, self._mask, self.config["readout"], half=5)
        log_q_mean, dice = self._score()
        # Voxel mean of chi(p_t) - chi(p_{t+1}) = mean log q_{t+1} - mean log q_t (MECCA.md §3).
        reward = 0.0 if self._unlabeled else float(log_q_mean - self._log_q_mean)
        self._log_q_mean = log_q_mean
        self._step += 1
        truncated = self._step >= self.config["steps"]
        if not truncated:
            self._click(self.config["clicks_per_step"])
        return self._obs.copy(), reward, False, truncated, self._info(dice)

    # ------------------------------------------------------------- extra public API

    @property
    def probability(self) -> np.ndarray:
        """Current foreground probability p, float32 ``(D, H, W)`` (read-only view)."""
        view = self._obs[1].view()
        view.flags.writeable = False
        return view

    @property
    def segmentation(self) -> np.ndarray:
        """Current segmentation, bool ``(D, H, W)`` (p read out by config ``readout``; read-only view)."""
        view = self._mask.view()
        view.flags.writeable = False
        return view

    @property
    def label(self) -> np.ndarray:
        """Ground truth of the current volume, uint8 ``(D, H, W)`` (read-only).

        For evaluation code only: training code must use ``info["label"]``, which unlabeled
        volumes do not carry.
        """
        if self._label is None:
            raise RuntimeError("no volume yet: call reset()")
        return self._label

    @property
    def unlabeled(self) -> bool:
        """Whether the current volume is an unlabeled training case."""
        return self._unlabeled

    @property
    def clicks(self) -> np.ndarray:
        """All clicks on the current volume, int32 ``(K, 3)``, oldest first."""
        return self._user.clicks

    def set_advice(self, mask: np.ndarray | None) -> None:
        """Restrict the simulated user's next clicks to ``mask`` (bool ``(D, H, W)``).

        Stays in force until replaced, lifted with ``None``, or the next reset (the
        interaction guide's ``guided`` mode, MECCA.md §4).
        """
        if mask is None:
            self._advice = None
            return
        mask = np.asarray(mask)
        if mask.shape != self.shape:
            raise ValueError(f"advice mask has shape {mask.shape}, expected {self.shape}")
        self._advice = mask.astype(bool)

    def add_clicks(self, points: np.ndarray) -> np.ndarray:
        """Add clicks placed by someone else (e.g. a real user): int ``(K, 3)`` ``(d, h, w)``.

        Validated (``ValueError`` naming a point outside the volume) and drawn into the
        hint map (with ``hint_channels=2``, the channel of the clicked voxel's true class); the returned int32 points are part of ``info["clicks"]`` from now on.
        """
        if self._step < 0:
            raise RuntimeError("call reset() before add_clicks()")
        points = self._user.record(points)
        self._draw_clicks(points)
        return points

    def set_vector_slot(self, index: int, count: int) -> None:
        """Make this env sub-env ``index`` of ``count`` in a vector env (``MECCAEnvRunner``
        calls it: RLlib builds every sub-env from one ``EnvContext``).

        The sub-envs then share one seeded case order and take turns along it (sub-env i
        serves positions i, i + count, ...), so they draw different cases whenever there
        are at least ``count`` cases; their augmentation and click streams are their own.
        Re-seeds the streams with the config's seed.
        """
        if not 0 <= int(index) < int(count):
            raise ValueError(f"vector slot {index} outside [0, {count})")
        self._slot = (int(index), int(count))
        self._stream_key = (self._stream_key[0], int(index))
        self._seed_streams(self.config["seed"])

    # ------------------------------------------------------------------ internals

    def _seed_streams(self, seed: int | None) -> None:
        root = np.random.SeedSequence(seed, spawn_key=self._stream_key)
        order, data, user = (np.random.default_rng(s) for s in root.spawn(3))
        if self._slot[0] > 0:  # sub-envs of one vector env share sub-env 0's case order
            shared = np.random.SeedSequence(seed, spawn_key=(self._stream_key[0], 0))
            order = np.random.default_rng(shared.spawn(1)[0])
        self._order_rng, self._data_rng, self._user_rng = order, data, user
        self._order: np.ndarray = np.zeros(0, np.int64)
        self._cursor = self._slot[0]  # position in the concatenated per-pass permutations
        # labeled_episode_ratio: per-group permutations and a running labeled-episode credit
        self._group_order = {True: np.zeros(0, np.int64), False: np.zeros(0, np.int64)}
        self._group_cursor = {True: self._slot[0], False: self._slot[0]}
        ratio = float(self.config["labeled_episode_ratio"] or 0.0)
        self._labeled_credit = 1.0 - ratio if ratio > 0 else 0.0  # the first episode is labeled

    def _next_case(self, options: dict[str, Any] | None) -> int:
        if options and "case" in options:
            case = options["case"]
            if isinstance(case, str):
                if case not in self.source.names:
                    raise ValueError(f"options['case']: no case named {case!r}")
                return self.source.names.index(case)
            if not 0 <= int(case) < len(self.source):
                raise ValueError(f"options['case']: index {case} outside [0, {len(self.source)})")
            return int(case)
        if self.config["labeled_episode_ratio"] is not None:
            return self._next_interleaved(float(self.config["labeled_episode_ratio"]))
        while self._cursor >= len(self._order):  # a new pass over the cases
            self._cursor -= len(self._order)
            self._order = self._order_rng.permutation(len(self.source))
        case = int(self._order[self._cursor])
        self._cursor += self._slot[1]  # a vector env's sub-envs take turns (set_vector_slot)
        return case

    def _next_interleaved(self, ratio: float) -> int:
        """Next case of the labeled/unlabeled interleaving (MECCA.md §5, Algorithm 1).

        A credit grows by ``ratio`` per episode; a labeled case is served whenever it
        reaches 1 (so r = 0.5 alternates L, U, L, U). An empty group yields to the other.
        """
        labeled = np.asarray(self.source.labeled, dtype=bool)
        if labeled.any() and not labeled.all():
            self._labeled_credit += ratio
            want = self._labeled_credit >= 1.0 - 1e-9
            self._labeled_credit -= float(want)
        else:
            want = bool(labeled.any())
        members = np.flatnonzero(labeled == want)
        while self._group_cursor[want] >= len(self._group_order[want]):  # a new pass over the group
            self._group_cursor[want] -= len(self._group_order[want])
            self._group_order[want] = members[self._order_rng.permutation(len(members))]
        case = int(self._group_order[want][self._group_cursor[want]])
        self._group_cursor[want] += self._slot[1]  # sub-envs take turns (set_vector_slot)
        return case

    def _check_action(self, action: Any) -> np.ndarray:
        action = np.asarray(action)
        if action.shape != self.shape:
            raise ValueError(f"action has shape {action.shape}, expected {self.shape}")
        if not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"action dtype must be an integer type, got {action.dtype}")
        lo, hi = action.min(), action.max()
        if lo < 0 or hi >= len(ACTION_VALUES):
            bad = lo if lo < 0 else hi
            raise ValueError(f"action value {bad} outside [0, {len(ACTION_VALUES)})")
        return action

    def _score(self) -> tuple[float, float]:
        """Voxel mean of log q (MECCA.md §3, from a histogram of p) and Dice of the segmentation."""
        counts = np.bincount((self._slot_base + self._tenths).ravel(), minlength=2 * _LEVELS)
        log_q_mean = float(counts @ _LOG_Q) / self._tenths.size
        return log_q_mean, float(dice_score(self._mask, self._label))

    def _click(self, n: int) -> None:
        if n <= 0:
            return
        points = self._user.click(self._mask, n, self._user_rng, advice=self._advice)
        self._draw_clicks(points)

    def _draw_clicks(self, points: np.ndarray) -> None:
        """Draw clicks ``(K, 3)`` into the hint map(s); a click's side is the true class of
        its voxel (used with ``hint_channels=2``)."""
        self._hints.add(points, foreground=self._label[tuple(points.T)] > 0)

    def _info(self, dice: float) -> dict[str, Any]:
        info: dict[str, Any] = {
            "unlabeled": self._unlabeled,
            "dice": dice,
            "clicks": self._user.clicks,
            "case": self._case,
            "step": self._step,
        }
        if not self._unlabeled:
            info["label"] = self._label
        return info

