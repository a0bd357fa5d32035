"""Faces (stands in for MUG facial expressions): embedded procedural faces and a loader for real MUG.

Embedded default: procedural identities (52 as MUG's actors) x 6 expressions in MUG's label
order (anger 0, disgust 1, happiness 2, fear 3, sadness 4, surprise 5) x `takes` clips each.
A clip goes from a neutral face (frame 0) to the expression's apex over 15 frames, with
per-clip onset speed, apex intensity (0.7-1.0), per-action-unit variation, head jitter,
lighting and background. Identities differ in face shape, skin tone, hair colour and style,
clothes, eye spacing/size, brow thickness, nose, mouth, and some wear glasses or a beard.

Each expression is a combination of action units (brows, eyelids, mouth), so expressions
are told apart by geometry, not colour; identities by appearance, which does not change
over a clip. Faces are drawn with OpenCV's anti-aliased primitives on a 128-pixel canvas
(sub-pixel coordinates), moved by a similarity transform (head jitter) and resized to the
stored size with INTER_AREA.

DFP labels (PROTOCOLS.md, "Self-supervision signals"): per frame the left eyelid gap, right
eyelid gap and inner lip gap, divided by the face height and given in pixels of a face
`image_size` tall (i.e. × image_size). "Left" is the eye on the image's
left, as dlib's landmarks 36-41. For the procedural faces they are exact: an eyelid gap is the
mean distance between the upper and lower lid at 1/3 and 2/3 of the eye's width (where
dlib's points 37/41 and 38/40 sit), the lip gap the distance between the inner lips at the
mouth's centre (dlib 62/66), and the face height the head ellipse's height (forehead to
chin); the head transform scales both alike, so the ratios are untouched by it.

Real MUG (`data_dir`): `subjects3/<id>/<expression>/take*/` image frames; 15 frames sampled
evenly from each take (as MoCoGAN), the face found on the middle frame by OpenCV's Haar
cascade and that square box (enlarged 1.2x) cropped from every frame; DFP labels from
dlib's 68-point landmarks (optional extra `[mug]`: dlib-bin + face-recognition-models),
normalised by the detected face box's height.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from benchmark.data import DatasetInfo, SequenceDataset, cached_arrays, fingerprint
from benchmark.registry import DATASETS

log = logging.getLogger(__name__)

VERSION = "faces-procedural-v1"  # bump when the renderer, the labels or the splits change

EXPRESSIONS = ("anger", "disgust", "happiness", "fear", "sadness", "surprise")  # MUG label order
N_EXPRESSIONS = len(EXPRESSIONS)
TEST_FRACTION, VAL_FRACTION = 0.25, 0.1
SETTINGS = ("image_size", "identities", "takes", "frames", "seed")
DFP_NAMES = ("left_eye_gap", "right_eye_gap", "lip_gap")

R = 128            # render canvas (pixels); stored frames are resized from it with INTER_AREA
SHIFT = 4          # OpenCV sub-pixel bits for the drawing calls
LID_AT = 1 / 3     # eyelid gaps are measured at u = +-1/3 across the eye (dlib's points 37/41, 38/40)
LID_POWER = 0.6    # lid curve: y = opening * (1 - u^2)^LID_POWER, u in [-1, 1] across the eye
NOISE_SIGMA = 1.5  # sensor noise (grey levels) added at the stored size
ZOOM, FACE_Y = 1.25, 64.0  # a stored frame is a face crop: the drawing magnified about the face centre, put at this row
AA_GROW = 0.5      # OpenCV's anti-aliased fillPoly covers this much (pixels) beyond a polygon's outline

# ------------------------------------------------------------------------------ appearance

SKIN = [(250, 222, 198), (238, 198, 160), (218, 172, 132), (188, 138, 98), (150, 104, 70), (104, 70, 48)]
HAIR = [(28, 24, 22), (68, 45, 30), (118, 80, 48), (150, 68, 34), (218, 184, 112), (158, 156, 152),
        (196, 96, 42)]
SHIRT = [(40, 70, 160), (170, 40, 45), (45, 130, 70), (215, 190, 60), (110, 60, 140), (60, 60, 65),
         (235, 235, 235), (230, 120, 40)]
IRIS = [(70, 45, 30), (40, 90, 150), (70, 110, 60), (30, 25, 20)]
HAIR_STYLES = ("short", "long", "fringe", "receding", "curly", "side-part")
N_COMBOS = len(SKIN) * len(HAIR) * len(HAIR_STYLES)  # identities differ in at least one of these
MAX_IDENTITIES = N_COMBOS
SCLERA, PUPIL, LASH, MOUTH_IN, TEETH, GLASSES = ((238, 236, 230), (15, 12, 12), (35, 28, 28), (70, 24, 30),
                                                 (238, 232, 218), (30, 30, 35))

# ------------------------------------------------------------------------------ expressions

# action units of an expression at full intensity (all 0 = neutral)
AUS = ("brow_up", "brow_inner", "brow_in", "upper_lid", "lower_lid", "corner_up", "mouth_wide",
       "jaw", "upper_lip", "press", "wrinkle", "cheek")
_APEX = {
    # brows lowered and pulled together, inner ends down (V); eyes narrowed; lips pressed thin
    "anger": dict(brow_up=-0.6, brow_inner=-1.0, brow_in=1.0, upper_lid=-0.45, lower_lid=0.6,
                  corner_up=-0.15, mouth_wide=-0.3, press=1.0),
    # nose wrinkled, upper lip raised (lips part, upper teeth show), brows lowered, eyes narrowed
    "disgust": dict(brow_up=-0.3, brow_in=0.3, upper_lid=-0.3, lower_lid=0.8,
                    corner_up=-0.5, mouth_wide=0.05, jaw=0.1, upper_lip=1.0, wrinkle=1.0, cheek=0.8),
    # smile: corners up and out, lips part over the teeth, cheeks push the lower lids up
    "happiness": dict(upper_lid=-0.25, lower_lid=1.0, corner_up=1.0, mouth_wide=0.55, jaw=0.4, cheek=1.0),
    # brows raised and drawn together, eyes wide, mouth stretched open sideways
    "fear": dict(brow_up=0.5, brow_inner=0.9, brow_in=0.8, upper_lid=0.85, lower_lid=0.25,
                 corner_up=-0.5, mouth_wide=0.9, jaw=0.45),
    # inner brow ends raised (inverted V), upper lids droop, mouth corners down
    "sadness": dict(brow_up=-0.25, brow_inner=1.0, brow_in=0.3, upper_lid=-0.45, lower_lid=0.1,
                    corner_up=-1.0, mouth_wide=-0.1, press=0.3),
    # brows high and arched, eyes wide, jaw dropped into a round O
    "surprise": dict(brow_up=1.0, upper_lid=1.0, lower_lid=-0.2, mouth_wide=-0.6, jaw=1.0),
}
APEX = np.array([[_APEX[e].get(a, 0.0) for a in AUS] for e in EXPRESSIONS], np.float32)
AU = {a: i for i, a in enumerate(AUS)}


# ------------------------------------------------------------------------------ identities

def identity_params(i: int, seed: int) -> dict:
    """Appearance and neutral geometry of identity i (canvas pixels); identity i is the same for any count."""
    combo = np.random.default_rng([seed, 7]).permutation(N_COMBOS)[i]
    combo, skin = divmod(int(combo), len(SKIN))
    style, hair = divmod(combo, len(HAIR))
    r = np.random.default_rng([seed, 1, i])
    shirt = r.integers(len(SHIRT))
    u = r.uniform
    fa, fb = u(40, 47), u(51, 56)
    cx, cy = R / 2, 72.0
    tone = np.array(SKIN[skin], np.float32) * u(0.95, 1.03)
    hair_rgb = np.array(HAIR[hair], np.float32) * u(0.9, 1.1)
    p = dict(
        skin=np.clip(tone, 0, 255), hair=np.clip(hair_rgb, 0, 255), style=style,
        shirt=np.array(SHIRT[shirt], np.float32), iris=np.array(IRIS[r.integers(len(IRIS))], np.float32),
        lip=np.clip(tone * 0.72 + np.array([150, 40, 45]) * 0.28, 0, 255),
        brow=np.minimum(hair_rgb * 0.5 + np.array([35, 28, 24]) * 0.5, tone * 0.5),
        cx=cx, cy=cy, fa=fa, fb=fb,
        eye_y=cy - u(0.1, 0.16) * fb, eye_dx=fa * u(0.44, 0.5), ew=fa * u(0.24, 0.28),
        upper0=u(4.5, 6.0), lower0=u(2.6, 3.6),
        brow_gap=u(13.5, 16.0), brow_w=u(3.6, 5.4), brow_len=u(1.1, 1.3),
        nose_y=cy + u(0.16, 0.22) * fb, nose_w=u(7.0, 10.0), nose_len=u(0.8, 1.1),
        mouth_y=cy + u(0.44, 0.5) * fb, mouth_w=u(16.0, 19.0), lip_up=u(3.0, 4.4), lip_lo=u(3.6, 5.4),
        glasses=bool(r.random() < 0.22), beard=bool(r.random() < 0.25 and style != 1),
        ear=u(0.8, 1.2), neck=u(0.42, 0.52),
    )
    return p


# ------------------------------------------------------------------------------ drawing

def _px(pts) -> np.ndarray:
    return np.round(np.asarray(pts, np.float64) * (1 << SHIFT)).astype(np.int32)


def _col(c):
    return tuple(float(v) for v in c)


def _poly(img, pts, color):
    cv2.fillPoly(img, [_px(pts)], _col(color), cv2.LINE_AA, SHIFT)


def _line(img, pts, color, width):
    cv2.polylines(img, [_px(pts)], False, _col(color), max(1, int(round(width))), cv2.LINE_AA, SHIFT)


def _ellipse(img, c, axes, color, thickness=-1, angle=0.0, arc=(0, 360)):
    cv2.ellipse(img, tuple(int(v) for v in _px(c)), tuple(int(v) for v in _px(axes)), angle, arc[0], arc[1],
                _col(color), thickness, cv2.LINE_AA, SHIFT)


def _ellipse_pts(c, axes, a0, a1, n=40):
    """Points on an ellipse from angle a0 to a1 (degrees; 0 = +x, 90 = down, image coordinates)."""
    t = np.radians(np.linspace(a0, a1, n))
    return np.stack([c[0] + axes[0] * np.cos(t), c[1] + axes[1] * np.sin(t)], 1)


def _mix(a, b, w):
    return np.asarray(a, np.float32) * (1 - w) + np.asarray(b, np.float32) * w


def _lid(u):
    return np.clip(1 - u ** 2, 0, None) ** LID_POWER


def _eye_openings(p: dict, au: np.ndarray, asym: float) -> tuple[list[float], list[float]]:
    """Upper and lower lid openings (canvas pixels from the eye's centre line) of the (left, right) eye."""
    ups, los = [], []
    for k in (1 - asym, 1 + asym):
        ul = au[AU["upper_lid"]] * k
        up = p["upper0"] + (7.5 * ul if ul > 0 else 3.8 * ul)
        lo = p["lower0"] - 2.4 * au[AU["lower_lid"]] * k + 0.6 * au[AU["upper_lid"]] * (au[AU["upper_lid"]] > 0)
        ups.append(max(up, 0.4))
        los.append(max(lo, 0.3))
    return ups, los


def _mouth(p: dict, au: np.ndarray) -> dict:
    """Mouth geometry: centre, half-width, corner rise, inner openings, lip thickness, shape exponent."""
    wide = au[AU["mouth_wide"]]
    mw = p["mouth_w"] * (1 + 0.32 * wide)
    press = au[AU["press"]]
    return dict(
        mx=p["cx"], my=p["mouth_y"] - 1.2 * au[AU["upper_lip"]], mw=mw,
        corner=-10.0 * au[AU["corner_up"]] + 1.2 * max(wide, 0),  # + = corners below the centre
        open_up=2.0 * au[AU["jaw"]] + 6.0 * au[AU["upper_lip"]],
        open_lo=15.0 * au[AU["jaw"]] + 2.0 * au[AU["upper_lip"]],
        t_up=p["lip_up"] * (1 - 0.7 * press), t_lo=p["lip_lo"] * (1 - 0.7 * press),
        q=0.55 - 0.3 * max(wide, 0) + 0.25 * max(-wide, 0),
    )


def gaps(p: dict, au: np.ndarray, asym: float = 0.0) -> np.ndarray:
    """Exact DFP labels of a face with action units `au`: (left eye, right eye, lip) gap / face height."""
    ups, los = _eye_openings(p, au, asym)
    m = _mouth(p, au)
    at = _lid(np.float64(LID_AT))
    eyes = [(up + lo) * at for up, lo in zip(ups, los)]
    return np.array([eyes[0], eyes[1], m["open_up"] + m["open_lo"]], np.float32) / (2 * p["fb"])


def _mouth_curves(m: dict, n: int = 25):
    u = np.linspace(-1, 1, n)
    base = m["my"] + m["corner"] * u ** 2
    shape = np.clip(1 - u ** 2, 0, None) ** m["q"]
    thick = np.sqrt(np.clip(1 - u ** 2, 0, None))
    x = m["mx"] + m["mw"] * u
    inner_up = base - m["open_up"] * shape
    inner_lo = base + m["open_lo"] * shape
    outer_up = inner_up - m["t_up"] * thick
    outer_lo = inner_lo + m["t_lo"] * thick
    # a cupid's bow: the upper lip dips a little at the centre
    outer_up = outer_up + 0.9 * np.exp(-(u / 0.12) ** 2) * m["t_up"] / 3
    return x, inner_up, inner_lo, outer_up, outer_lo


def _draw_hair_back(img, p):
    cx, cy, fa, fb, hair, style = p["cx"], p["cy"], p["fa"], p["fb"], p["hair"], p["style"]
    name = HAIR_STYLES[style]
    if name == "long":
        _poly(img, np.concatenate([_ellipse_pts((cx, cy - 4), (fa + 8, fb + 6), 180, 360),
                                   [(cx + fa + 10, cy + fb + 8), (cx - fa - 10, cy + fb + 8)]]), hair)
    elif name == "curly":
        _ellipse(img, (cx, cy - 10), (fa + 13, fb + 6), hair)
        for a in np.linspace(150, 390, 14):
            t = math.radians(a)
            _ellipse(img, (cx + (fa + 11) * math.cos(t), cy - 10 + (fb + 5) * math.sin(t)), (7, 7), hair)
    elif name != "receding":  # receding: hair at the temples only (_draw_hair_front)
        _ellipse(img, (cx, cy - 4), (fa + 4, fb + 4), hair)


def _draw_hair_front(img, p):
    cx, cy, fa, fb, hair, style = p["cx"], p["cy"], p["fa"], p["fb"], p["hair"], p["style"]
    name = HAIR_STYLES[style]
    top = _ellipse_pts((cx, cy - 3), (fa + 3.5, fb + 3.5), 180, 360)  # left -> over the top -> right
    temple_y = cy - 0.3 * fb
    xs = np.linspace(cx + fa + 3, cx - fa - 3, 30)  # right -> left along the hairline
    v = (xs - cx) / (fa + 3)
    if name == "receding":
        for arc in ((190, 232), (308, 350)):  # hair at the temples only, along the head's outline
            _ellipse(img, (cx, cy - 1), (fa - 2, fb - 1), hair, 6, arc=arc)
        return
    if name == "fringe":
        line = cy - 0.56 * fb + 2 * v ** 2 - 1.5 * np.cos(v * 9) * (1 - v ** 2)
    elif name == "side-part":
        sweep = 11 * np.clip((v + 1) / 2, 0, 1) ** 1.5 * (v < 0.85)  # hair swept across from one side
        line = cy - 0.68 * fb + sweep + (temple_y - cy + 0.68 * fb) * v ** 6
    elif name == "curly":
        line = cy - 0.62 * fb + 3 * np.abs(np.sin(v * 7)) + 8 * v ** 4
    else:  # short, long: a rounded hairline down to the temples
        line = cy - 0.64 * fb + (temple_y - cy + 0.64 * fb) * v ** 4
    line = np.minimum(line, temple_y + 0 * v)
    _poly(img, np.concatenate([top, np.stack([xs, line], 1)]), hair)


def _draw_eye(img, p, ex, ey, up, lo, side):
    ew, skin = p["ew"], p["skin"]
    _ellipse(img, (ex, ey), (ew, 16), SCLERA)
    ri = min(0.5 * ew, 6.0)
    _ellipse(img, (ex, ey + 0.3), (ri, ri), p["iris"])
    _ellipse(img, (ex, ey + 0.3), (0.45 * ri, 0.45 * ri), PUPIL)
    u = np.linspace(-1.2, 1.2, 31)
    x = ex + ew * u
    y_up = ey - up * _lid(u)
    y_lo = ey + lo * _lid(u)
    # OpenCV fills a polygon AA_GROW past its outline: the lids are drawn that much back, and the lash and
    # lower lid lines just outside the opening, so that the visible opening is the labelled gap
    _poly(img, np.concatenate([[(ex - 1.25 * ew, ey - 17), (ex + 1.25 * ew, ey - 17)],
                               np.stack([x, y_up - AA_GROW], 1)[::-1]]), skin)
    _poly(img, np.concatenate([[(ex - 1.25 * ew, ey + 17), (ex + 1.25 * ew, ey + 17)],
                               np.stack([x, y_lo + AA_GROW], 1)[::-1]]), skin)
    inner = np.abs(u) <= 1.05
    _line(img, np.stack([x[inner], y_up[inner] - 2.2], 1), LASH, 2.0)
    _line(img, np.stack([x[inner], y_lo[inner] + 1.2], 1), _mix(skin, LASH, 0.45), 1.0)
    # the crease above the upper lid
    _line(img, np.stack([x[inner], y_up[inner] - 2.6 - 0.25 * up * _lid(u[inner])], 1), _mix(skin, LASH, 0.25), 1.0)


def _draw_brow(img, p, ex, ey, au, side):
    """side -1: image-left eye (its inner end points right, +x), +1: image-right."""
    ew = p["ew"]
    base = ey - p["brow_gap"]
    up, inner, pull = au[AU["brow_up"]], au[AU["brow_inner"]], au[AU["brow_in"]]
    half = ew * p["brow_len"]
    x_in = ex - side * (half * 0.85 + 2.5 * pull)
    x_out = ex + side * half * 1.1
    y_in = base - 9.0 * up - 8.0 * inner + 1.5 * pull * (inner < 0)
    y_out = base - 9.0 * up + 2.5 * max(inner, 0) + 1.0 * (inner < 0) * inner
    t = np.linspace(0, 1, 21)
    x = x_in + (x_out - x_in) * t
    arch = (2.5 + 1.5 * max(up, 0)) * 4 * t * (1 - t)
    y = y_in + (y_out - y_in) * t - arch
    w = p["brow_w"] * (1 - 0.45 * t)
    _poly(img, np.concatenate([np.stack([x, y - w / 2], 1), np.stack([x, y + w / 2], 1)[::-1]]), p["brow"])


def _draw_mouth(img, p, au):
    m = _mouth(p, au)
    x, iu, il, ou, ol = _mouth_curves(m)
    _poly(img, np.concatenate([np.stack([x, ou], 1), np.stack([x, ol], 1)[::-1]]), p["lip"])
    if m["open_up"] + m["open_lo"] > 0.25:
        inset = np.minimum(AA_GROW, (il - iu) / 2)  # so that the visible opening is the labelled gap
        iu, il = iu + inset, il - inset
        _poly(img, np.concatenate([np.stack([x, iu], 1), np.stack([x, il], 1)[::-1]]), MOUTH_IN)
        teeth = np.minimum(iu + 3.2, il)
        keep = slice(2, -2)
        _poly(img, np.concatenate([np.stack([x[keep], iu[keep]], 1), np.stack([x[keep], teeth[keep]], 1)[::-1]]),
              TEETH)
        _line(img, np.stack([x, iu - AA_GROW - 0.7], 1), _mix(p["lip"], LASH, 0.5), 1.0)
    else:
        _line(img, np.stack([x, (iu + il) / 2], 1), _mix(p["lip"], LASH, 0.5), 1.0)


def _draw_nose(img, p, au):
    cx, ny, nw, skin = p["cx"], p["nose_y"], p["nose_w"], p["skin"]
    shade = _mix(skin, (60, 30, 20), 0.35)
    lift = 1.8 * au[AU["wrinkle"]] + 0.8 * au[AU["upper_lip"]]
    ny = ny - lift
    flare = 1 + 0.12 * au[AU["wrinkle"]]
    top = p["eye_y"] + 2
    _line(img, [(cx - 2.5, top), (cx - 3.2, top + (ny - top) * 0.6 * p["nose_len"]), (cx - nw * 0.75 * flare, ny - 3)],
          _mix(skin, shade, 0.6), 1.3)
    for s in (-1, 1):
        _ellipse(img, (cx + s * nw * 0.42 * flare, ny + 0.4), (2.0 * flare, 1.2), _mix(shade, (30, 15, 10), 0.5))
        _ellipse(img, (cx + s * nw * 0.8 * flare, ny - 1.2), (2.6, 3.0), shade, 1, arc=(90 - s * 90, 270 - s * 90))
    _ellipse(img, (cx, ny - 0.3), (nw * 0.35, 2.3), shade, 1, arc=(20, 160))
    wr = au[AU["wrinkle"]]
    if wr > 0.05:  # horizontal wrinkles on the bridge
        c = _mix(skin, shade, min(1.0, 1.3 * wr))
        for k in range(3):
            yy = p["eye_y"] + 1 + 3.2 * k
            _line(img, [(cx - 5, yy + 0.8), (cx, yy), (cx + 5, yy + 0.8)], c, 1.0)
    # nasolabial folds: cheeks raised (smile, disgust) deepen the lines from the nose to the mouth
    fold = max(au[AU["cheek"]], 0.0)
    if fold > 0.05:
        m = _mouth(p, au)
        c = _mix(skin, shade, min(1.0, fold))
        for s in (-1, 1):
            _line(img, [(cx + s * nw * 1.1, ny - 2), (cx + s * (m["mw"] + 3.5), m["my"] - 3 + m["corner"] * 0.5),
                        (cx + s * (m["mw"] + 4), m["my"] + 4 + m["corner"])], c, 1.2)


def _draw_beard(img, p, au):
    cx, cy, fa, fb = p["cx"], p["cy"], p["fa"], p["fb"]
    m = _mouth(p, au)
    x, _, _, _, ol = _mouth_curves(m, 15)
    y0 = p["mouth_y"] - 6
    a0 = math.degrees(math.asin(np.clip((y0 - cy) / fb, -1, 1)))
    arc = _ellipse_pts((cx, cy), (fa + 0.5, fb + 0.5), a0, 180 - a0)  # right jaw -> chin -> left jaw
    rim = np.stack([x, ol + 2.5], 1)                                   # left -> right under the lips
    pts = np.concatenate([arc, [(cx - m["mw"] - 5, y0)], rim, [(cx + m["mw"] + 5, y0)]])
    _poly(img, pts, _mix(p["hair"], p["skin"], 0.15))


def _draw_glasses(img, p, eyes):
    for ex, ey in eyes:
        _ellipse(img, (ex, ey), (p["ew"] * 1.4, 12.5), GLASSES, 1)
    (lx, ly), (rx, ry) = eyes
    _line(img, [(lx + p["ew"] * 1.4, ly - 2), (p["cx"], ly - 4), (rx - p["ew"] * 1.4, ry - 2)], GLASSES, 1)


def _draw_base(p: dict, background) -> np.ndarray:
    """What an expression does not move: background, shoulders, neck, hair, ears, head. uint8 [R, R, 3]."""
    img = np.empty((R, R, 3), np.uint8)
    img[:] = np.clip(np.asarray(background) + 0.5, 0, 255).astype(np.uint8)
    cx, cy, fa, fb, skin = p["cx"], p["cy"], p["fa"], p["fb"], p["skin"]
    _ellipse(img, (cx, cy + fb + 28), (fa * 1.9, 30), p["shirt"])
    neck_w = fa * p["neck"] * 1.5
    _poly(img, [(cx - neck_w, cy + fb * 0.55), (cx + neck_w, cy + fb * 0.55),
                (cx + neck_w, cy + fb + 6), (cx, cy + fb + 12), (cx - neck_w, cy + fb + 6)], skin * 0.82)
    _draw_hair_back(img, p)
    for s in (-1, 1):  # ears
        _ellipse(img, (cx + s * fa * 0.99, p["eye_y"] + 9), (5.5 * p["ear"], 10 * p["ear"]), skin * 0.93)
    _ellipse(img, (cx, cy), (fa, fb), skin)
    _draw_hair_front(img, p)
    return img


def _draw_features(img: np.ndarray, p: dict, au: np.ndarray, asym: float) -> np.ndarray:
    """Beard, eyes, brows, nose, mouth and glasses of a face with action units `au`, drawn onto `img`."""
    cx, skin = p["cx"], p["skin"]
    if p["beard"]:
        _draw_beard(img, p, au)
    ups, los = _eye_openings(p, au, asym)
    eyes = [(cx - p["eye_dx"], p["eye_y"]), (cx + p["eye_dx"], p["eye_y"])]
    for (ex, ey), up, lo, side in zip(eyes, ups, los, (-1, 1)):
        _draw_eye(img, p, ex, ey, up, lo, side)
    if au[AU["brow_inner"]] < -0.1:  # frown lines between the brows
        c = _mix(skin, (60, 30, 20), min(0.35, -0.35 * au[AU["brow_inner"]]))
        for s in (-1, 1):
            _line(img, [(cx + s * 2.5, p["eye_y"] - 13), (cx + s * 1.8, p["eye_y"] - 6)], c, 1.0)
    for (ex, ey), side in zip(eyes, (-1, 1)):
        _draw_brow(img, p, ex, ey, au, side)
    _draw_nose(img, p, au)
    _draw_mouth(img, p, au)
    if p["glasses"]:
        _draw_glasses(img, p, eyes)
    return img


def draw_face(p: dict, au: np.ndarray, asym: float = 0.0, background=(200, 205, 210)) -> np.ndarray:
    """One face with action units `au` on the R x R canvas, canonical pose: uint8 [R, R, 3] RGB."""
    return _draw_features(_draw_base(p, background), p, np.asarray(au, np.float64), asym)


# ------------------------------------------------------------------------------ clips

def clip_params(identity: int, expression: int, take: int, seed: int, frames: int) -> dict:
    """Per-clip randomness: timing, intensity, action-unit variation, head motion, lighting, noise seed."""
    r = np.random.default_rng([seed, 2, identity, expression, take])
    t0 = min(r.uniform(0.5, 2.5), (frames - 1) / 2)  # onset after frame 0: frame 0 is always neutral
    t1 = min(t0 + r.uniform(3.0, 7.0), frames - 1.0)  # the apex, reached by the last frame at the latest
    apex = r.uniform(0.7, 1.0)
    au_scale = np.clip(1 + r.normal(0, 0.1, len(AUS)), 0.75, 1.25)
    steps = r.normal(0, 1, (frames, 4)) * [0.35, 0.35, 0.25, 0.003]
    steps[0] = 0
    walk = np.cumsum(steps, 0)
    return dict(
        t0=t0, t1=t1, apex=apex, au=APEX[expression] * au_scale, asym=r.uniform(-0.08, 0.08),
        shift=r.uniform(-3, 3, 2) + walk[:, :2], angle=r.uniform(-3, 3) + walk[:, 2],
        scale=r.uniform(0.95, 1.05) * (1 + walk[:, 3]),
        background=np.clip(np.array([196, 202, 210]) + r.uniform(-12, 12, 3) + r.uniform(-10, 10), 0, 255),
        gain=r.uniform(0.92, 1.06), noise_seed=int(r.integers(2 ** 31)),
    )


def intensity(c: dict, frames: int) -> np.ndarray:
    """Expression intensity per frame: 0 (neutral) until onset t0, smoothstep to the apex at t1, then held."""
    s = np.clip((np.arange(frames) - c["t0"]) / (c["t1"] - c["t0"]), 0, 1)
    return c["apex"] * s * s * (3 - 2 * s)


def render_clip(identity: int, expression: int, take: int, seed: int, frames: int = 15, size: int = 64,
                params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One clip: frames uint8 [T, size, size, 3] RGB and exact DFP labels float32 [T, 3]."""
    p = params if params is not None else identity_params(identity, seed)
    c = clip_params(identity, expression, take, seed, frames)
    w = intensity(c, frames)
    noise = np.random.default_rng(c["noise_seed"]).normal(0, NOISE_SIGMA, (frames, size, size, 3))
    base = _draw_base(p, c["background"])
    x = np.empty((frames, size, size, 3), np.uint8)
    dfp = np.empty((frames, 3), np.float32)
    drawn = {}  # frames before the onset and after the apex share their drawing
    for t in range(frames):
        au = c["au"] * w[t]
        if w[t] not in drawn:
            drawn[w[t]] = _draw_features(base.copy(), p, au, c["asym"])
        m = cv2.getRotationMatrix2D((p["cx"], p["cy"]), float(c["angle"][t]), ZOOM * float(c["scale"][t]))
        m[:, 2] += c["shift"][t] + (R / 2 - p["cx"], FACE_Y - p["cy"])
        img = cv2.warpAffine(drawn[w[t]], m, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if size != R:
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        x[t] = np.clip(img * c["gain"] + noise[t] + 0.5, 0, 255).astype(np.uint8)
        dfp[t] = gaps(p, au, c["asym"])
    return x, dfp


# ------------------------------------------------------------------------------ splits

def _carry_round(counts, fraction: float) -> np.ndarray:
    """How many of each group's items to pick so that every group gets ~fraction of its items and the
    total is ~fraction of all (rounding error carried to the next group); groups of >= 2 keep one back."""
    out, carry = [], 0.0
    for n in counts:
        want = fraction * n + carry
        k = int(np.floor(want + 0.5))
        k = min(max(k, 0), n - 1 if n >= 2 else n)
        carry = want - k
        out.append(k)
    return np.array(out, np.int64)


def split_clips(identity: np.ndarray, expression: np.ndarray, seed: int) -> np.ndarray:
    """Split codes per clip: 0 train, 1 val (part of train), 2 test.

    Test: ~25% of the clips, stratified by (identity, expression): the pairs are visited
    identity by identity, each identity's expressions in a seeded order, and each pair gives
    its share of takes with the rounding error carried on (so with 4 takes one per pair, with
    3 takes one per pair except every 4th, with 2 every other pair), the takes drawn at random.
    Val: ~10% of the train clips, stratified by expression in the same way.
    """
    rng = np.random.default_rng([seed, 3])
    code = np.zeros(len(identity), np.int8)
    pairs = []
    for i in np.unique(identity):
        for e in rng.permutation(np.unique(expression[identity == i])):
            pairs.append(np.flatnonzero((identity == i) & (expression == e)))
    for rows, k in zip(pairs, _carry_round([len(r) for r in pairs], TEST_FRACTION)):
        code[rng.permutation(rows)[:k]] = 2
    train = np.flatnonzero(code == 0)
    groups = [rng.permutation(train[expression[train] == e]) for e in np.unique(expression[train])]
    for rows, k in zip(groups, _carry_round([len(g) for g in groups], VAL_FRACTION)):
        code[rows[:k]] = 1
    if len(train) >= 2 and not (code == 1).any():
        code[train[0]] = 1
    return code


# ------------------------------------------------------------------------------ embedded data

def _render_identity(args) -> tuple[np.ndarray, np.ndarray]:
    """All clips of one identity, expression-major then take: uint8 [6 * takes, T, 3, H, W], float32 [.., T, 3]."""
    i, takes, frames, size, seed = args
    p = identity_params(i, seed)
    clips = [render_clip(i, e, k, seed, frames, size, p) for e in range(N_EXPRESSIONS) for k in range(takes)]
    return np.stack([c[0] for c in clips]).transpose(0, 1, 4, 2, 3), np.stack([c[1] for c in clips])


def _generate(size: int, identities: int, takes: int, frames: int, seed: int) -> dict[str, np.ndarray]:
    """Every (identity, expression, take) clip, in that order; identity i's clips do not depend on `identities`."""
    clips = [(i, e, k) for i in range(identities) for e in range(N_EXPRESSIONS) for k in range(takes)]
    x = np.empty((len(clips), frames, 3, size, size), np.uint8)
    dfp = np.empty((len(clips), frames, 3), np.float32)
    jobs = [(i, takes, frames, size, seed) for i in range(identities)]
    per = N_EXPRESSIONS * takes
    workers = min(os.cpu_count() or 1, identities) if len(clips) * frames > 2000 else 1
    with tqdm(total=len(clips), desc="faces: rendering", unit="clip") as bar:
        if workers > 1:  # drawing is Python-bound: one process per core
            with ProcessPoolExecutor(workers) as pool:
                results = pool.map(_render_identity, jobs)
                for i, (xi, di) in enumerate(results):
                    x[i * per:(i + 1) * per], dfp[i * per:(i + 1) * per] = xi, di
                    bar.update(per)
        else:
            for i, job in enumerate(jobs):
                x[i * per:(i + 1) * per], dfp[i * per:(i + 1) * per] = _render_identity(job)
                bar.update(per)
    identity, expression, take = (np.array(c, np.int64) for c in zip(*clips))
    return dict(x=x, dfp=dfp, identity=identity, expression=expression, take=take,
                split=split_clips(identity, expression, seed))


def _check_settings(data: dict) -> dict:
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise ValueError(f"faces: unknown settings {unknown}; expected keys {list(SETTINGS)}")
    s = dict(image_size=int(data.get("image_size", 64)), identities=int(data.get("identities", 52)),
             takes=int(data.get("takes", 4)), frames=int(data.get("frames", 15)), seed=int(data.get("seed", 0)))
    bad = []
    if s["image_size"] not in (32, 64):
        bad.append(f"image_size={s['image_size']} (32 or 64)")
    if not 1 <= s["identities"] <= MAX_IDENTITIES:
        bad.append(f"identities={s['identities']} (1..{MAX_IDENTITIES})")
    if not 1 <= s["takes"] <= 50:
        bad.append(f"takes={s['takes']} (1..50)")
    if not 2 <= s["frames"] <= 100:
        bad.append(f"frames={s['frames']} (2..100)")
    if bad:
        raise ValueError(f"faces: invalid settings: {', '.join(bad)}")
    return s


def _embedded(s: dict):
    key = fingerprint(dict(version=VERSION, **s))
    arrays = cached_arrays("faces", key, lambda: _generate(s["image_size"], s["identities"], s["takes"],
                                                           s["frames"], s["seed"]))
    summary = dict(source="embedded", clips=len(arrays["x"]), faces_without_detection=0, takes_skipped_short=0)
    return arrays, key, s["identities"], summary


# ------------------------------------------------------------------------------ real MUG

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MUG_LAYOUT = "subjects3/<subject id>/<expression>/take*/ image frames (expression: " + ", ".join(EXPRESSIONS) + ")"
MUG_EXTRA_MSG = "faces --data-dir needs dlib landmarks: pip install -e '.[mug]' (dlib-bin, face-recognition-models)"
BOX_ENLARGE = 1.2
# dlib 68-point indices (0-based) of the upper/lower lid pairs of each eye and the inner lips
LEFT_EYE_PAIRS, RIGHT_EYE_PAIRS, LIP_PAIR = ((37, 41), (38, 40)), ((43, 47), (44, 46)), (62, 66)


def _mug_root(data_dir: str) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"faces: MUG data dir {root} does not exist (or is not a folder); "
                                f"expected {MUG_LAYOUT}")
    if (root / "subjects3").is_dir():
        root = root / "subjects3"
    return root


def _find_takes(root: Path, frames: int) -> tuple[list[tuple[str, int, str, list[Path]]], int]:
    """(subject, expression, take name, all frame paths) per usable take, and how many takes were too short."""
    takes, short = [], 0
    for subject in sorted(d for d in root.iterdir() if d.is_dir()):
        for e, name in enumerate(EXPRESSIONS):
            edir = subject / name
            if not edir.is_dir():
                continue
            for take in sorted(d for d in edir.iterdir() if d.is_dir() and d.name.lower().startswith("take")):
                files = sorted(f for f in take.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                if not files:
                    continue
                if len(files) < frames:
                    short += 1
                    continue
                takes.append((subject.name, e, take.name, files))
    if short:
        log.warning("faces: skipped %d MUG takes with fewer than %d frames", short, frames)
    if not takes:
        raise FileNotFoundError(
            f"faces: no MUG clips in {root}" + (f" ({short} takes had fewer than {frames} frames)" if short else "")
            + f"; expected {MUG_LAYOUT}")
    return takes, short


def _sample(files: list[Path], frames: int) -> list[Path]:
    """`frames` frames evenly spread over the take, first and last included."""
    idx = np.round(np.linspace(0, len(files) - 1, frames)).astype(int)
    return [files[i] for i in idx]


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"faces: cannot read image {path} (expected a jpg/png frame)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=1)
def _face_cascade():
    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"faces: OpenCV's Haar cascade {path} could not be loaded")
    return cascade


def detect_face(rgb: np.ndarray) -> tuple[int, int, int, int] | None:
    """The largest frontal face (x, y, w, h) found by OpenCV's Haar cascade, or None."""
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    side = min(gray.shape)
    found = _face_cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                             minSize=(max(20, side // 6), max(20, side // 6)))
    if len(found) == 0:
        return None
    x, y, w, h = max(found, key=lambda b: b[2] * b[3])
    return int(x), int(y), int(w), int(h)


def crop_box(face, shape) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) around a face box, enlarged BOX_ENLARGE x and moved inside the image."""
    h, w = shape[:2]
    x, y, bw, bh = face
    side = int(round(min(max(bw, bh) * BOX_ENLARGE, h, w)))
    x0 = int(round(x + bw / 2 - side / 2))
    y0 = int(round(y + bh / 2 - side / 2))
    return min(max(x0, 0), w - side), min(max(y0, 0), h - side), side


def _shape_predictor_path() -> str:
    try:
        import face_recognition_models
        return face_recognition_models.pose_predictor_model_location()
    except ImportError as e:  # the package imports pkg_resources, gone from recent setuptools: find the file
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(MUG_EXTRA_MSG) from e
        return str(Path(list(spec.submodule_search_locations)[0]) / "models" / "shape_predictor_68_face_landmarks.dat")


@functools.lru_cache(maxsize=1)
def landmark_fn():
    """A function (rgb frame, face box (x, y, w, h)) -> float [68, 2] landmarks (dlib's 68-point predictor)."""
    try:
        import dlib
    except ImportError as e:
        raise ImportError(MUG_EXTRA_MSG) from e
    path = _shape_predictor_path()
    if not Path(path).is_file():
        raise RuntimeError(f"{MUG_EXTRA_MSG}; the landmark model {path} is missing")
    predictor = dlib.shape_predictor(path)

    def landmarks(rgb, box):
        x, y, w, h = (int(v) for v in box)
        shape = predictor(np.ascontiguousarray(rgb), dlib.rectangle(x, y, x + w, y + h))
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)
    return landmarks


def landmark_gaps(points: np.ndarray, face_height: float) -> np.ndarray:
    """(left eye, right eye, inner lip) gaps of 68 landmarks [68, 2], divided by the face height."""
    def d(a, b):
        return float(np.linalg.norm(points[a] - points[b]))
    left = np.mean([d(a, b) for a, b in LEFT_EYE_PAIRS])
    right = np.mean([d(a, b) for a, b in RIGHT_EYE_PAIRS])
    return np.array([left, right, d(*LIP_PAIR)], np.float32) / float(face_height)


def _read_mug(root: Path, takes, size: int, frames: int, short: int) -> dict[str, np.ndarray]:
    landmarks = landmark_fn()  # fail before reading thousands of frames
    n = len(takes)
    x = np.empty((n, frames, 3, size, size), np.uint8)
    dfp = np.empty((n, frames, 3), np.float32)
    subjects = sorted({t[0] for t in takes})
    missed = 0
    for i, (subject, e, take, files) in enumerate(tqdm(takes, desc="faces: reading MUG", unit="take")):
        rgb = [_read_rgb(f) for f in _sample(files, frames)]
        if len({f.shape for f in rgb}) != 1:
            raise ValueError(f"faces: frames of {root / subject / EXPRESSIONS[e] / take} differ in size")
        face = detect_face(rgb[frames // 2])
        if face is None:
            missed += 1
            log.warning("faces: no face found in %s; using a centre crop", root / subject / EXPRESSIONS[e] / take)
            h, w = rgb[0].shape[:2]
            side = min(h, w)
            face = ((w - side) // 2, (h - side) // 2, side, side)
        x0, y0, side = crop_box(face, rgb[0].shape)
        for t, f in enumerate(rgb):
            crop = cv2.resize(f[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)
            x[i, t] = crop.transpose(2, 0, 1)
            dfp[i, t] = landmark_gaps(landmarks(f, face), face[3])
    identity = np.array([subjects.index(t[0]) for t in takes], np.int64)
    expression = np.array([t[1] for t in takes], np.int64)
    take_no = np.array([_take_number(t[2]) for t in takes], np.int64)
    return dict(x=x, dfp=dfp, identity=identity, expression=expression, take=take_no,
                n_subjects=np.array(len(subjects)), faces_without_detection=np.array(missed),
                takes_skipped_short=np.array(short))


def _take_number(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 0


def _real(data_dir: str, s: dict):
    root = _mug_root(data_dir)
    takes, short = _find_takes(root, s["frames"])
    stats = sorted((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                   for t in takes for f in _sample(t[3], s["frames"]))
    key = fingerprint(dict(version=VERSION, files=stats, image_size=s["image_size"], frames=s["frames"],
                           seed=s["seed"], box=BOX_ENLARGE, short=short))
    arrays = cached_arrays("faces-mug", key, lambda: _read_mug(root, takes, s["image_size"], s["frames"], short))
    arrays["split"] = split_clips(arrays["identity"], arrays["expression"], s["seed"])
    summary = dict(source=str(root), clips=len(arrays["x"]),
                   faces_without_detection=int(arrays.pop("faces_without_detection")),
                   takes_skipped_short=int(arrays.pop("takes_skipped_short")))
    return arrays, key, int(arrays.pop("n_subjects")), summary


# ------------------------------------------------------------------------------ entry point

@DATASETS.register("faces", doc="Faces (MUG stand-in): identities x 6 expressions x takes, 15 frames neutral -> apex")
def build_faces(split: str, data: dict, data_dir: str | None = None) -> SequenceDataset:
    """`data`: image_size, identities, takes, frames, seed (profiles.py). `data_dir` reads real MUG instead.

    Splits are by clip, stratified by (identity, expression): test ~25%, train the rest, val
    ~10% of train (a subset of train: tables train on all of train). The returned dataset's
    `summary` dict says where the data came from, how many clips, and for real MUG how many
    takes had no detected face (centre crop) or too few frames (skipped).
    """
    if split not in ("train", "val", "test", "fit"):
        raise ValueError(f"faces: unknown split {split!r}; expected train, val, test or fit")
    s = _check_settings(data)
    if data_dir is None:
        arrays, key, n_identities, summary = _embedded(s)
    else:
        arrays, key, n_identities, summary = _real(data_dir, s)
    code = arrays["split"]
    rows = np.flatnonzero({"train": code <= 1, "val": code == 1, "test": code == 2, "fit": code == 0}[split])
    # DFP targets in pixels of a face `image_size` tall (cached as fractions of the face height): the
    # seed regresses landmark distances, and in pixel units L_DFP grows with the image like the summed
    # reconstruction term, so λ2 = 100 keeps its weight at any size (fractions made λ2·L_DFP ~1e-3 of it)
    cols = dict(x=arrays["x"], static=arrays["identity"][:, None], dynamic=arrays["expression"][:, None],
                dfp=arrays["dfp"] * np.float32(s["image_size"]), take=arrays["take"])
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v[rows])) for k, v in cols.items()}
    info = DatasetInfo(
        name="faces", kind="video", frames=arrays["x"].shape[1], channels=3, size=s["image_size"],
        static_labels={"identity": n_identities}, dynamic_labels={"expression": N_EXPRESSIONS},
        dfp={"kind": "regress", "dim": 3}, num_train=int((code <= 1).sum()))
    ds = SequenceDataset(info, split, tensors, key)
    ds.summary = summary
    return ds
