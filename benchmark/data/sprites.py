"""Sprites (Li & Mandt layout): an embedded procedural version and a loader for the real files.

Embedded default: 6 skin x 6 top x 6 pants x 6 hair colours = 1296 characters, each
doing 3 actions (walk, spellcast, slash) x 3 directions (front, left, right), 8 frames.
The label order follows the real data: action = 3 * action_id + direction_id, and
`attrs` is (skin, top, pants, hair).

The character is an articulated humanoid drawn as a map of colour *slots* (skin, top,
pants, ...) at 4x the 64-pixel base size; averaging that map down gives each slot's
pixel coverage, and a character's frames are coverage x its palette. So all characters
share one geometry per (action, direction, hair style, jitter), generation is a few
matrix products, and smaller sizes are the 64-pixel frames resized with INTER_AREA.

DFP labels (PROTOCOLS.md, "Self-supervision signals"): Farneback optical flow between
consecutive grayscale frames at the stored size, magnitude averaged over a 4x4 grid of
patches (index = row * 4 + col, row 0 at the top); frame t is labelled from the flow
t-1 -> t, frame 0 from 0 -> 1; the top 3 patches are stored, most motion first.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from benchmark.data import DatasetInfo, SequenceDataset, cached_arrays, fingerprint
from benchmark.registry import DATASETS

VERSION = "sprites-procedural-v1"  # bump when the renderer or the DFP labels change

ATTRIBUTES = ("skin", "top", "pants", "hair")
ACTIONS = ("walk", "spellcast", "slash")
DIRECTIONS = ("front", "left", "right")
N_VALUES = 6
N_CHARACTERS = N_VALUES ** len(ATTRIBUTES)      # 1296
N_CLASSES = len(ACTIONS) * len(DIRECTIONS)       # 9
TEST_CHARACTERS = 296                            # of 1296, as the real data's 1000/296 split
VAL_FRACTION = 0.1
GRID, TOPK = 4, 3                                # DFP patch grid and how many patches are stored

# RGB colours, six clearly distinct values per attribute
SKIN = [(255, 222, 180), (225, 170, 110), (150, 95, 50), (90, 58, 38), (120, 190, 100), (150, 175, 240)]
TOP = [(210, 35, 35), (40, 80, 210), (35, 160, 70), (245, 205, 35), (140, 55, 180), (240, 125, 25)]
PANTS = [(30, 45, 130), (115, 70, 35), (145, 145, 145), (200, 180, 120), (130, 25, 50), (30, 100, 45)]
HAIR = [(25, 25, 25), (245, 215, 90), (125, 75, 35), (215, 75, 30), (245, 110, 190), (70, 120, 240)]
BACKGROUND, OUTLINE, SHOES, BLADE = (240, 240, 240), (40, 30, 30), (70, 45, 30), (200, 205, 220)
FAR_SHADE = 0.7  # limbs on the far side of a profile are darker, so they read as behind the body

# colour slots of the part maps
(S_BG, S_OUTLINE, S_SKIN, S_SKIN_FAR, S_TOP, S_TOP_FAR, S_PANTS, S_PANTS_FAR,
 S_HAIR, S_SHOES, S_BLADE) = range(11)
N_SLOTS = 11

BASE = 64   # geometry is defined on a 64x64 canvas
SS = 4      # supersampling factor of the part maps (anti-aliasing)

# body proportions in base pixels
CX, HIP_Y, SHOULDER_Y, HEAD_Y, HEAD_R = 32.0, 40.0, 26.0, 17.0, 6.5
THIGH, SHIN, UPPER_ARM, FOREARM = 8.5, 8.0, 7.5, 6.5
LEG_W, ARM_W, LINE = 4.5, 3.5, 0.8  # LINE: outline width

# Farneback parameters for 32-64 pixel frames: a small window keeps the flow local to a limb
# (it agrees best with where the frames change, at both sizes)
FLOW = dict(pyr_scale=0.5, levels=3, winsize=5, iterations=3, poly_n=5, poly_sigma=1.1, flags=0)


# ------------------------------------------------------------------------------ drawing

class _Canvas:
    """Part map at SS x the base size; every shape is drawn with a dark outline under it."""

    def __init__(self):
        self.ids = np.zeros((BASE * SS, BASE * SS), np.uint8)

    @staticmethod
    def _px(p):
        return int(round(p[0] * SS)), int(round(p[1] * SS))

    def limb(self, a, b, width, slot):
        for w, s in ((width + 2 * LINE, S_OUTLINE), (width, slot)):
            cv2.line(self.ids, self._px(a), self._px(b), s, max(1, int(round(w * SS))))

    def disc(self, c, r, slot, outline=True):
        if outline:
            cv2.circle(self.ids, self._px(c), int(round((r + LINE) * SS)), S_OUTLINE, -1)
        cv2.circle(self.ids, self._px(c), int(round(r * SS)), slot, -1)

    def poly(self, pts, slot):
        pts = np.array([self._px(p) for p in pts], np.int32)
        cv2.polylines(self.ids, [pts], True, S_OUTLINE, int(round(2 * LINE * SS)))
        cv2.fillPoly(self.ids, [pts], slot)


def _at(p, length, angle_deg):
    """End of a segment of `length` from `p`, `angle_deg` from straight down (positive: towards +x)."""
    a = math.radians(angle_deg)
    return p[0] + length * math.sin(a), p[1] + length * math.cos(a)


def _pose(action: int, view: str, t: int, frames: int) -> dict:
    """Joint angles of frame t (one full cycle per sequence, so any start phase is valid).

    dy: vertical offset of the body. Profile (facing +x), angles in degrees from straight
    down, positive = forward: legs (near, far) as (thigh, knee bend), arms (near, far) as
    (upper arm, elbow bend). Front: arms (viewer's left, right) as (angle outwards in the
    image plane, pitch towards the viewer, which foreshortens the arm, elbow bend); `lift`
    raises each foot. `sword`: the near (front view: right) arm holds a sword.
    """
    phi = 2 * math.pi * t / frames
    s, rise = math.sin(phi), (1 - math.cos(phi)) / 2  # rise: 0 -> 1 -> 0 over the cycle
    if action == 0:  # walk: legs step, arms swing against them, the body bobs
        bob = -1.2 * (1 - abs(s))
        if view == "side":
            return dict(dy=bob, legs=[(28 * s, 40 * max(0.0, math.cos(phi))),
                                      (-28 * s, 40 * max(0.0, -math.cos(phi)))],
                        arms=[(-30 * s, 25), (30 * s, 25)])
        return dict(dy=bob, lift=[5 * max(0.0, s), 5 * max(0.0, -s)],
                    arms=[(12 - 6 * s, 40 * s, 10), (12 + 6 * s, -40 * s, 10)])
    if action == 1:  # spellcast: both arms rise overhead and come down
        up = 15 + 150 * rise
        if view == "side":
            return dict(dy=-0.8 * rise, legs=[(6, 4), (-6, 4)], arms=[(up, 15), (up - 12, 15)])
        return dict(dy=-0.8 * rise, lift=[0, 0], arms=[(up, 0, 10), (up, 0, 10)])
    # slash: wind the sword arm up and back, strike forward and down
    swing = [35, 110, 175, 200, 140, 60, 15, 20]
    a = float(np.interp(t * len(swing) / frames, np.arange(len(swing) + 1), swing + swing[:1]))
    dip = max(0.0, math.sin(phi - math.pi)) * 1.2  # crouch into the strike
    if view == "side":
        return dict(dy=dip, legs=[(22, 10), (-18, 5)], arms=[(a, 25), (25, 35)], sword=True)
    # seen from the front the strike ends across the body (negative angle = inwards)
    return dict(dy=dip, lift=[0, 0], arms=[(15, 0, 10), (a - 35, 0, 30)], sword=True)


def _leg_side(cv, hip, thigh_deg, knee_deg, far):
    knee = _at(hip, THIGH, thigh_deg)
    ankle = _at(knee, SHIN, thigh_deg - knee_deg)
    pants = S_PANTS_FAR if far else S_PANTS
    cv.limb(hip, knee, LEG_W, pants)
    cv.limb(knee, ankle, LEG_W - 0.5, pants)
    cv.limb((ankle[0] - 0.5, ankle[1] + 0.8), (ankle[0] + 2.5, ankle[1] + 0.8), 2.5, S_SHOES)


def _arm_side(cv, shoulder, upper_deg, elbow_deg, far, sword=False):
    elbow = _at(shoulder, UPPER_ARM, upper_deg)
    wrist = _at(elbow, FOREARM, upper_deg + elbow_deg)
    cv.limb(shoulder, elbow, ARM_W, S_TOP_FAR if far else S_TOP)
    if sword:  # blade continues the forearm, drawn under the hand
        tip = _at(wrist, 12, upper_deg + elbow_deg)
        cv.limb(wrist, tip, 1.6, S_BLADE)
    cv.limb(elbow, wrist, ARM_W - 0.5, S_SKIN_FAR if far else S_SKIN)
    cv.disc(wrist, 1.8, S_SKIN_FAR if far else S_SKIN)


def _long_hair(cv, top, style, side):
    """Long hair hangs down to the shoulders, behind the head (behind the body too, seen from the front)."""
    if style == 1:
        hx, hy = top[0] - (3.5 if side else 0), top[1]
        w = 6 if side else 7.8
        cv.poly([(hx - w, hy), (hx + w, hy), (hx + w + 0.5, hy + 11), (hx - w - 0.5, hy + 11)], S_HAIR)


def _head(cv, top, style, side):
    """Hair is a disc behind the face disc, so it shows on top (and at the back in profile)."""
    hx, hy = top
    cv.disc((hx - (1.2 if side else 0), hy - 1.3), HEAD_R + 0.6, S_HAIR)
    if style == 2:  # spiky
        for dx in (-4, 0, 4):
            cv.poly([(hx + dx - 2.5, hy - 5), (hx + dx + 2.5, hy - 5), (hx + dx + 1, hy - 10.5)], S_HAIR)
        # again, without outline, so the spikes grow out of the hair without a seam
        cv.disc((hx - (1.2 if side else 0), hy - 1.3), HEAD_R + 0.6, S_HAIR, outline=False)
    face = (hx + (1.3 if side else 0), hy + 1.3)
    cv.disc(face, HEAD_R - 1.3, S_SKIN, outline=False)
    eyes = [(hx + 3.2, hy + 0.8)] if side else [(hx - 2.2, hy + 1.0), (hx + 2.2, hy + 1.0)]
    for e in eyes:
        cv.disc(e, 0.8, S_OUTLINE, outline=False)


def _draw_side(p: dict, style: int, cx: float) -> np.ndarray:
    """Profile facing right (+x); the far arm and leg are drawn first, in shade."""
    cv = _Canvas()
    hip = (cx, HIP_Y + p["dy"])
    shoulder = (cx, SHOULDER_Y + p["dy"])
    (near_leg, far_leg), (near_arm, far_arm) = p["legs"], p["arms"]
    _arm_side(cv, shoulder, *far_arm, far=True)
    _leg_side(cv, hip, *far_leg, far=True)
    cv.limb((cx, SHOULDER_Y + 1 + p["dy"]), (cx, HIP_Y - 3 + p["dy"]), 9, S_TOP)
    cv.limb((cx - 0.5, HIP_Y - 1.5 + p["dy"]), (cx + 0.5, HIP_Y - 1.5 + p["dy"]), 8, S_PANTS)
    _leg_side(cv, hip, *near_leg, far=False)
    _long_hair(cv, (cx, HEAD_Y + p["dy"]), style, side=True)
    _head(cv, (cx, HEAD_Y + p["dy"]), style, side=True)
    _arm_side(cv, shoulder, *near_arm, far=False, sword=p.get("sword", False))
    return cv.ids


def _draw_front(p: dict, style: int, cx: float) -> np.ndarray:
    """Facing the viewer: legs hang from the hips, lifted by bending the knee; arms swing in pitch."""
    cv = _Canvas()
    dy = p["dy"]
    _long_hair(cv, (cx, HEAD_Y + dy), style, side=False)
    for side, lift in zip((-1, 1), p["lift"]):
        hip = (cx + side * 3, HIP_Y + dy)
        knee = (hip[0], hip[1] + THIGH - lift * 0.6)
        ankle = (hip[0], knee[1] + SHIN - lift * 0.4)
        cv.limb(hip, knee, LEG_W + 0.3, S_PANTS)
        cv.limb(knee, ankle, LEG_W, S_PANTS)
        cv.limb((ankle[0] - 1, ankle[1] + 1), (ankle[0] + 1, ankle[1] + 1), 3, S_SHOES)
    cv.poly([(cx - 7, SHOULDER_Y - 1 + dy), (cx + 7, SHOULDER_Y - 1 + dy),
             (cx + 6, HIP_Y - 2 + dy), (cx - 6, HIP_Y - 2 + dy)], S_TOP)
    cv.poly([(cx - 6, HIP_Y - 2.5 + dy), (cx + 6, HIP_Y - 2.5 + dy),
             (cx + 6, HIP_Y + 1.5 + dy), (cx - 6, HIP_Y + 1.5 + dy)], S_PANTS)
    _head(cv, (cx, HEAD_Y + dy), style, side=False)
    for side, (angle, pitch, elbow) in zip((-1, 1), p["arms"]):
        shoulder = (cx + side * 7.5, SHOULDER_Y + 0.5 + dy)
        # pitch foreshortens the arm: draw it as a shorter arm at the same image-plane angle
        k = math.cos(math.radians(pitch))
        elbow_pt = _at(shoulder, UPPER_ARM * k, side * angle)
        wrist = _at(elbow_pt, FOREARM * k, side * (angle + elbow))
        cv.limb(shoulder, elbow_pt, ARM_W, S_TOP)
        if p.get("sword") and side == 1:
            cv.limb(wrist, _at(wrist, 12, side * (angle + elbow)), 1.6, S_BLADE)
        cv.limb(elbow_pt, wrist, ARM_W - 0.5, S_SKIN)
        cv.disc(wrist, 1.8, S_SKIN)
    return cv.ids


def _coverage(action: int, direction: int, style: int, dx: int, frames: int, size: int) -> np.ndarray:
    """Slot coverage of one motion, float32 [N_SLOTS, T, size, size] (frames = coverage @ palette)."""
    out = np.empty((N_SLOTS, frames, size, size), np.float32)
    view = "front" if DIRECTIONS[direction] == "front" else "side"
    for t in range(frames):
        p = _pose(action, view, t, frames)
        if view == "front":
            ids = _draw_front(p, style, CX + dx)
        elif DIRECTIONS[direction] == "right":
            ids = _draw_side(p, style, CX + dx)
        else:  # left is the mirror image of right
            ids = cv2.flip(_draw_side(p, style, BASE - CX - dx), 1)
        # count each slot's subpixels in every SS x SS block
        blocks = ids.reshape(BASE, SS, BASE, SS).transpose(0, 2, 1, 3).reshape(BASE * BASE, SS * SS)
        counts = np.bincount((blocks + N_SLOTS * np.arange(BASE * BASE)[:, None]).ravel(),
                             minlength=BASE * BASE * N_SLOTS)
        cov = counts.reshape(BASE, BASE, N_SLOTS).transpose(2, 0, 1).astype(np.float32) / SS ** 2
        if size != BASE:  # resizing is linear, so this equals resizing the coloured 64-pixel frame
            cov = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in cov])
        out[:, t] = cov
    return out


def _palettes(attrs: np.ndarray) -> np.ndarray:
    """Colours of every slot for each character: float32 [n, 3, N_SLOTS]."""
    attrs = np.asarray(attrs).reshape(-1, 4)
    pal = np.empty((len(attrs), N_SLOTS, 3), np.float32)
    skin, top = np.array(SKIN)[attrs[:, 0]], np.array(TOP)[attrs[:, 1]]
    pants = np.array(PANTS)[attrs[:, 2]]
    pal[:, S_BG], pal[:, S_OUTLINE], pal[:, S_SHOES], pal[:, S_BLADE] = BACKGROUND, OUTLINE, SHOES, BLADE
    pal[:, S_SKIN], pal[:, S_SKIN_FAR] = skin, skin * FAR_SHADE
    pal[:, S_TOP], pal[:, S_TOP_FAR] = top, top * FAR_SHADE
    pal[:, S_PANTS], pal[:, S_PANTS_FAR] = pants, pants * FAR_SHADE
    pal[:, S_HAIR] = np.array(HAIR)[attrs[:, 3]]
    return pal.transpose(0, 2, 1)


def _paint(attrs: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Frames of n characters sharing one coverage: uint8 [n, T, 3, H, W]."""
    pal = _palettes(attrs)
    n, (_, t, h, w) = len(pal), cov.shape
    rgb = pal.reshape(n * 3, N_SLOTS) @ cov.reshape(N_SLOTS, -1)
    rgb = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    return rgb.reshape(n, 3, t, h, w).transpose(0, 2, 1, 3, 4)


def hair_style(hair: int) -> int:
    """Hair shape that goes with a hair value: short, long or spiky."""
    return hair % 3


def character_attrs(character) -> np.ndarray:
    """Character id(s) -> (skin, top, pants, hair) values; id = skin*216 + top*36 + pants*6 + hair."""
    c = np.asarray(character)
    return np.stack([c // N_VALUES ** 3, c // N_VALUES ** 2 % N_VALUES, c // N_VALUES % N_VALUES,
                     c % N_VALUES], axis=-1)


def character_id(attrs) -> np.ndarray:
    """(skin, top, pants, hair) values [..., 4] -> character id(s)."""
    a = np.asarray(attrs)
    return ((a[..., 0] * N_VALUES + a[..., 1]) * N_VALUES + a[..., 2]) * N_VALUES + a[..., 3]


def render_character(attrs, action: int, direction: int, frames: int = 8, size: int = 64) -> np.ndarray:
    """One character (skin, top, pants, hair) doing `action` (0-2) facing `direction` (0-2): uint8 [T, H, W, 3]."""
    cov = _coverage(action, direction, hair_style(attrs[3]), 0, frames, size)
    return _paint(np.asarray(attrs)[None], cov)[0].transpose(0, 2, 3, 1)


# ------------------------------------------------------------------------------ DFP labels

def _flow_patches(gray: np.ndarray) -> np.ndarray:
    """Top-k flow patches of each frame of one grayscale sequence [T, H, W] -> int64 [T, TOPK]."""
    t, h, w = gray.shape
    mags = []
    for i in range(t - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, **FLOW)
        mag = np.sqrt((flow ** 2).sum(-1))
        mags.append(mag.reshape(GRID, h // GRID, GRID, w // GRID).mean(axis=(1, 3)).ravel())
    mags = [mags[0]] + mags  # frame 0 takes the flow 0 -> 1, frame t the flow t-1 -> t
    return np.argsort(-np.stack(mags), axis=1, kind="stable")[:, :TOPK]


def dfp_labels(x: np.ndarray, desc: str = "sprites: optical flow", chunk: int = 64) -> np.ndarray:
    """Patch labels of uint8 frames [N, T, 3, H, W] -> int64 [N, T, TOPK], computed on all cores."""
    n, t, _, h, w = x.shape
    if h % GRID or w % GRID:
        raise ValueError(f"frames {h}x{w} do not split into a {GRID}x{GRID} patch grid")
    out = np.empty((n, t, TOPK), np.int64)
    weights = np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]

    def work(start):
        stop = min(start + chunk, n)
        gray = np.clip((x[start:stop] * weights).sum(axis=2) + 0.5, 0, 255).astype(np.uint8)
        for i, g in enumerate(gray):
            out[start + i] = _flow_patches(g)
        return stop - start

    # OpenCV releases the GIL, so threads run the flow in parallel
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool, tqdm(total=n, desc=desc, unit="seq") as bar:
        for done in pool.map(work, range(0, n, chunk)):
            bar.update(done)
    return out


# ------------------------------------------------------------------------------ embedded data

def _generate(size: int, characters: int, seed: int, frames: int) -> dict[str, np.ndarray]:
    """All sequences of the first `characters` of the seeded character order, 9 per character."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(N_CHARACTERS)[:characters]
    # per-sequence start phase and 1-pixel horizontal jitter, drawn for all 1296 x 9
    # sequences so that a smaller set is a subset of the full one
    phase = rng.integers(0, frames, size=(N_CHARACTERS, N_CLASSES))
    shift = rng.integers(-1, 2, size=(N_CHARACTERS, N_CLASSES))

    character = np.repeat(order, N_CLASSES)
    action = np.tile(np.arange(N_CLASSES), len(order))
    attrs = character_attrs(character)
    phase, shift = phase[character, action], shift[character, action]
    x = np.empty((len(character), frames, 3, size, size), np.uint8)
    groups = [(a, s, d) for a in range(N_CLASSES) for s in range(3) for d in (-1, 0, 1)]
    for a, style, dx in tqdm(groups, desc="sprites: rendering", unit="motion"):
        rows = np.flatnonzero((action == a) & (hair_style(attrs[:, 3]) == style) & (shift == dx))
        if len(rows) == 0:
            continue
        seqs = _paint(attrs[rows], _coverage(a // 3, a % 3, style, dx, frames, size))
        # the motions are cycles, so a random start phase is a roll of the frames
        t_idx = (np.arange(frames)[None] + phase[rows, None]) % frames
        x[rows] = seqs[np.arange(len(rows))[:, None], t_idx]
    return dict(x=x, action=action.astype(np.int64), attrs=attrs.astype(np.int64),
                character=character.astype(np.int64), dfp=dfp_labels(x))


def _embedded(size: int, characters: int, seed: int, frames: int):
    settings = dict(version=VERSION, image_size=size, characters=characters, seed=seed, frames=frames,
                    flow=FLOW, grid=GRID)
    key = fingerprint(settings)
    if not 1 <= characters <= N_CHARACTERS:
        raise ValueError(f"sprites: characters must be in 1..{N_CHARACTERS}, got {characters}")
    arrays = cached_arrays("sprites", key, lambda: _generate(size, characters, seed, frames))
    # rows are grouped by character in the seeded order: test is the tail, val the tail of train
    n_test = round(characters * TEST_CHARACTERS / N_CHARACTERS)
    n_train = characters - n_test
    n_val = min(n_train - 1, max(1, round(n_train * VAL_FRACTION)))
    k = N_CLASSES
    splits = dict(train=slice(0, n_train * k), val=slice((n_train - n_val) * k, n_train * k),
                  test=slice(n_train * k, characters * k), fit=slice(0, (n_train - n_val) * k))
    return arrays, key, splits


# ------------------------------------------------------------------------------ real files

REAL_SPLITS = ("train", "test")
REAL_ACTIONS = ("walk", "spellcard", "slash")  # file names of the per-motion layout
# the real attribute order is (body, bottomwear, topwear, hair); ours is (skin, top, pants, hair)
REAL_TO_OURS = [0, 2, 1, 3]


def _real_files(root: Path) -> dict[str, list[Path]]:
    """Files of one of the two real layouts, per split; FileNotFoundError naming both when neither is complete."""
    flat = {s: [root / f"sprites_{k}_{s}.npy" for k in "XAD"] for s in REAL_SPLITS}
    if all(p.exists() for ps in flat.values() for p in ps):
        return flat
    for npy in (root, root / "npy"):
        per_motion = {s: [npy / f"{a}_{d}_{kind}_{s}.npy" for a in REAL_ACTIONS for d in DIRECTIONS
                          for kind in ("frames", "attributes")] for s in REAL_SPLITS}
        if all(p.exists() for ps in per_motion.values() for p in ps):
            return per_motion
    missing = [p.name for ps in flat.values() for p in ps if not p.exists()]
    raise FileNotFoundError(
        f"sprites: no real Sprites data in {root}: missing {', '.join(missing)} "
        f"(expected sprites_X_{{train,test}}.npy, sprites_A_{{train,test}}.npy, sprites_D_{{train,test}}.npy, "
        f"or the per-motion layout {{walk,spellcard,slash}}_{{front,left,right}}_{{frames,attributes}}_{{split}}.npy "
        f"in {root} or {root / 'npy'})")


def _to_uint8_frames(x: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """[N, T, H, W, 3] (or [N, T, 3, H, W]) float in [0, 1] or uint8 -> uint8 [N, T, 3, size, size].

    Works in chunks: the files can be float64, several times the memory of the result.
    """
    if x.shape[2] == 3 and x.shape[-1] != 3:
        x = x.transpose(0, 1, 3, 4, 2)
    n, t, h, w, c = x.shape
    out = np.empty((n, t, 3, size, size), np.uint8)
    for i in range(0, n, chunk):
        part = np.asarray(x[i:i + chunk])
        if part.dtype != np.uint8:
            part = np.clip(part * 255 + 0.5, 0, 255).astype(np.uint8)
        if (h, w) != (size, size):
            part = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
                             for f in part.reshape(-1, h, w, c)]).reshape(len(part), t, size, size, c)
        out[i:i + chunk] = part.transpose(0, 1, 4, 2, 3)
    return out


def _labels(a: np.ndarray) -> np.ndarray:
    """Attribute labels as one-hot [N, 4, 6], per frame [N, T, 4, 6] or indices [N, 4] -> ours, int64 [N, 4]."""
    a = np.asarray(a)
    if a.ndim == 4:
        a = a[:, 0]
    if a.ndim == 3:
        a = a.argmax(-1)
    return a[:, REAL_TO_OURS].astype(np.int64)


def _actions(d: np.ndarray) -> np.ndarray:
    """Action labels as one-hot per frame [N, T, 9], one-hot [N, 9] or indices [N] -> int64 [N]."""
    d = np.asarray(d)
    if d.ndim == 3:
        d = d[:, 0]
    if d.ndim == 2:
        d = d.argmax(-1)
    return d.astype(np.int64)


def _read_split(paths: list[Path], size: int):
    """Frames, attributes and actions of one split, in either layout."""
    if paths[0].name.startswith("sprites_X_"):
        x_path, a_path, d_path = paths
        return (_to_uint8_frames(np.load(x_path, mmap_mode="r"), size),
                _labels(np.load(a_path)), _actions(np.load(d_path)))
    xs, attrs, actions = [], [], []
    for label, (frames_path, attr_path) in enumerate(zip(paths[::2], paths[1::2])):  # label = 3 * action + direction
        xs.append(_to_uint8_frames(np.load(frames_path, mmap_mode="r"), size))
        attrs.append(_labels(np.load(attr_path)))
        actions.append(np.full(len(xs[-1]), label, np.int64))
    return np.concatenate(xs), np.concatenate(attrs), np.concatenate(actions)


def _read_real(files: dict[str, list[Path]], size: int) -> dict[str, np.ndarray]:
    """Train then test rows, with `n_train` saying where test begins."""
    parts = [_read_split(files[s], size) for s in REAL_SPLITS]
    x, attrs, action = (np.concatenate(p) for p in zip(*parts))
    return dict(x=x, action=action, attrs=attrs, character=character_id(attrs).astype(np.int64),
                dfp=dfp_labels(x), n_train=np.array(len(parts[0][0])))


def _real(data_dir: str, size: int, seed: int):
    files = _real_files(Path(data_dir))
    stats = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for ps in files.values() for p in ps)
    key = fingerprint(dict(version=VERSION, files=stats, image_size=size, flow=FLOW, grid=GRID, seed=seed))
    arrays = cached_arrays("sprites-real", key, lambda: _read_real(files, size))
    n_train = int(arrays.pop("n_train"))
    val = np.sort(np.random.default_rng(seed).permutation(n_train)[:round(n_train * VAL_FRACTION)])
    splits = dict(train=slice(0, n_train), val=val, test=slice(n_train, len(arrays["x"])),
                  fit=np.setdiff1d(np.arange(n_train), val))
    return arrays, key, splits


# ------------------------------------------------------------------------------ entry point

@DATASETS.register("sprites", doc="Sprites: 1296 characters (4 colour attributes) x 9 action-directions, 8 frames")
def build_sprites(split: str, data: dict, data_dir: str | None = None) -> SequenceDataset:
    """`data`: image_size, characters, seed, frames (profiles.py). `data_dir` reads the real files instead.

    Splits are by character: test = 296/1296 of the characters, train = the rest, and
    val = 10% of the train characters (a subset of train: tables train on all of train).
    """
    size, seed = int(data.get("image_size", BASE)), int(data.get("seed", 0))
    if data_dir is None:
        frames = int(data.get("frames", 8))
        arrays, key, splits = _embedded(size, int(data.get("characters", N_CHARACTERS)), seed, frames)
    else:
        arrays, key, splits = _real(data_dir, size, seed)
    if split not in splits:
        raise ValueError(f"sprites: unknown split {split!r}; expected train, val, test or fit")
    rows = splits[split]
    # the harness-wide label layout: `static` [N, S] and `dynamic` [N, D] columns in the order of
    # info.static_labels / info.dynamic_labels, so models, judges and protocols need no per-dataset keys
    cols = dict(x=arrays["x"], static=arrays["attrs"], dynamic=arrays["action"][:, None],
                dfp=arrays["dfp"], character=arrays["character"])
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in cols.items()}
    train = splits["train"]
    info = DatasetInfo(
        name="sprites", kind="video", frames=arrays["x"].shape[1], channels=3, size=size,
        static_labels={a: N_VALUES for a in ATTRIBUTES}, dynamic_labels={"action": N_CLASSES},
        dfp={"kind": "patch", "dim": GRID * GRID, "grid": GRID, "topk_stored": TOPK},
        num_train=len(arrays["x"][train]))
    return SequenceDataset(info, split, tensors, key)
