"""Procedural anime-style "toon" characters with exact part masks. README: "Synthetic toon characters".

A character is a `Geometry` (pose, framing, hair style, garments, background,
light direction: every random choice, all JSON-able) plus a `Palette` (one base
RGB per part). `render` rasterises the geometry at SS x the output size into
three aligned maps: part label, layer id (draw order) and tone (base, shadow,
highlight, ...). Cel shading is computed on those maps, not on colours: a part
pixel is in shadow when stepping away from the light leaves its shape for a
layer behind it (form shadow) or stepping towards the light enters a layer in
front of it (cast shadow: bangs on the forehead, chin on the neck). Colours
come last, from a (label, tone) lookup table, and the picture is downsampled
with INTER_AREA for anti-aliasing. Because the palette enters only through
that table, `rerender` with another palette keeps the mask and every shape
exactly and changes only part colours; line pixels stay black.

Parts: 0 background, 1 skin, 2 hair, 3 eyes, 4 upper garment, 5 lower garment,
6 accessory (optional), 7 line (black outline pixels). The output mask takes,
per pixel, the majority label of its SS x SS footprint; a pixel whose footprint
is at least half outline is labelled 7.
"""
from __future__ import annotations

import colorsys
import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import cv2
import numpy as np

PARTS: dict[int, str] = {0: "background", 1: "skin", 2: "hair", 3: "eyes", 4: "upper",
                         5: "lower", 6: "accessory", 7: "line"}
LINE = 7
BG, SKIN, HAIR, EYES, UPPER, LOWER, ACC = range(7)

# Tones: where inside a part a pixel is; the palette turns (part, tone) into RGB.
BASE, SHADOW, LIGHT, WHITE, DARK, BLUSH, ALT = range(7)
N_TONES = 7
SS = 3                       # supersampling factor (anti-aliasing)
LINE_RGB = (36, 26, 32)      # outline ink: fixed, never part of a palette
_FIX = 4                     # cv2 sub-pixel bits for polygon coordinates


# ----------------------------------------------------------------------------- palette

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Palette:
    """Base colour per part; shadow/highlight tones are derived in `tone_table`."""

    background: RGB
    skin: RGB
    hair: RGB
    eyes: RGB
    upper: RGB
    lower: RGB
    accessory: RGB
    background2: RGB  # second background colour (gradient end, stripes, dots)

    def base_colours(self) -> dict[str, RGB]:
        return {PARTS[k]: getattr(self, PARTS[k]) for k in range(7)}

    def to_json(self) -> str:
        return json.dumps({f.name: list(getattr(self, f.name)) for f in fields(self)},
                          sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "Palette":
        raw = json.loads(s)
        names = {f.name for f in fields(cls)}
        if set(raw) != names:
            raise ValueError(f"palette JSON keys {sorted(raw)} != expected {sorted(names)}")
        out = {}
        for k, v in raw.items():
            if len(v) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in v):
                raise ValueError(f"palette JSON: {k} is not an RGB triple of 0..255 ints: {v}")
            out[k] = tuple(v)
        return cls(**out)


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _pick(rng: np.random.Generator, weighted: list[tuple[float, object]]):
    w = np.array([p for p, _ in weighted], float)
    return weighted[int(rng.choice(len(weighted), p=w / w.sum()))][1]


def _hair_colour(rng: np.random.Generator) -> RGB:
    u = rng.uniform
    kind = _pick(rng, [(0.18, "black"), (0.16, "brown"), (0.14, "blonde"), (0.12, "pink"),
                       (0.12, "blue"), (0.08, "silver"), (0.08, "red"), (0.12, "any")])
    if kind == "black":
        return _hsv(u(0.55, 0.75), u(0.15, 0.4), u(0.16, 0.3))
    if kind == "brown":
        return _hsv(u(0.04, 0.09), u(0.45, 0.7), u(0.35, 0.65))
    if kind == "blonde":
        return _hsv(u(0.1, 0.15), u(0.35, 0.65), u(0.88, 1.0))
    if kind == "pink":
        return _hsv(u(0.88, 0.98), u(0.3, 0.6), u(0.9, 1.0))
    if kind == "blue":
        return _hsv(u(0.52, 0.66), u(0.4, 0.8), u(0.55, 0.95))
    if kind == "silver":
        return _hsv(u(0.55, 0.75), u(0.03, 0.12), u(0.8, 0.95))
    if kind == "red":
        return _hsv(u(-0.02, 0.05), u(0.6, 0.85), u(0.7, 0.95))
    return _hsv(u(0, 1), u(0.4, 0.8), u(0.5, 0.95))


def _garment_colour(rng: np.random.Generator) -> RGB:
    u = rng.uniform
    kind = _pick(rng, [(0.18, "white"), (0.14, "navy"), (0.08, "dark"), (0.35, "colour"),
                       (0.25, "pastel")])
    if kind == "white":
        return _hsv(u(0, 1), u(0.0, 0.06), u(0.93, 1.0))
    if kind == "navy":
        return _hsv(u(0.6, 0.67), u(0.5, 0.75), u(0.3, 0.45))
    if kind == "dark":
        return _hsv(u(0, 1), u(0.1, 0.3), u(0.25, 0.35))
    if kind == "colour":
        return _hsv(u(0, 1), u(0.5, 0.85), u(0.55, 0.95))
    return _hsv(u(0, 1), u(0.2, 0.45), u(0.85, 1.0))


def sample_palette(rng: np.random.Generator) -> Palette:
    """A palette from plausible anime distributions (hair any hue, skin narrow, ...)."""
    u = rng.uniform
    skin = _hsv(u(0.03, 0.08), u(0.1, 0.3), u(0.93, 1.0))
    hair = _hair_colour(rng)
    eyes = _hsv(u(0, 1), u(0.55, 0.95), u(0.55, 0.95))
    upper = _garment_colour(rng)
    lower = _garment_colour(rng)
    accessory = _hsv(u(0, 1), u(0.5, 0.9), u(0.7, 1.0))
    if rng.random() < 0.85:  # mostly light pastel backgrounds
        h = u(0, 1)
        background = _hsv(h, u(0.05, 0.3), u(0.9, 1.0))
        background2 = _hsv(h + u(-0.12, 0.12), u(0.1, 0.4), u(0.8, 1.0))
    else:
        h = u(0, 1)
        background = _hsv(h, u(0.3, 0.6), u(0.55, 0.85))
        background2 = _hsv(h + u(-0.1, 0.1), u(0.2, 0.5), u(0.7, 0.95))
    return Palette(background, skin, hair, eyes, upper, lower, accessory, background2)


def tone_table(palette: Palette, shadow_depth: float) -> np.ndarray:
    """(8 * N_TONES, 3) uint8 lookup: row label * N_TONES + tone.

    Shadows are darker and pushed towards cool violet (pinkish on skin), as
    anime cel shading does; highlights are lighter and slightly warm.
    """
    table = np.zeros((8, N_TONES, 3), np.float32)
    base = palette.base_colours()
    k = 1.0 - shadow_depth
    for lab in range(7):
        c = np.array(base[PARTS[lab]], np.float32)
        tint = np.array((1.0, 0.88, 0.9) if lab == SKIN else (0.9, 0.9, 1.04), np.float32)
        shadow = c * k * tint + np.array((0, 0, 8), np.float32) * (lab != SKIN)
        light = c + (255.0 - c) * 0.5
        lum = float(c @ np.array((0.299, 0.587, 0.114), np.float32)) / 255.0
        alt = c * 0.38 if lum > 0.55 else c + (255.0 - c) * 0.88
        table[lab] = [c, shadow, light, (250, 251, 255), c * 0.3, c * 0.6 + np.array(
            (255, 115, 125), np.float32) * 0.4, alt]
    table[LINE] = LINE_RGB
    return np.clip(table + 0.5, 0, 255).astype(np.uint8).reshape(8 * N_TONES, 3)


# ----------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Geometry:
    """Every random choice of one character; units are fractions of the canvas
    (framing) or head radii (shapes), so one geometry renders at any size."""

    framing: str          # full | half | bust | closeup
    cx: float             # neck base on the canvas (0..1)
    cy: float
    scale: float          # head radius / canvas size
    lean: float           # body rotation, degrees
    head_tilt: float      # degrees
    face_shift: float     # facial features sideways (a hint of 3/4 view), head radii
    arms: tuple           # (left upper, left fore, right upper, right fore) degrees, outward
    leg_spread: float
    hair_style: str
    back_len: float       # long/ponytail/twintail length, head radii below head centre
    bangs: tuple          # per-lock tip depth jitter
    side_locks: bool
    ahoge: bool
    upper_type: str
    long_sleeves: bool
    lower_type: str
    skirt_len: float
    accessory: str
    eye_size: float
    eye_gap: float
    look: float           # iris offset sideways, -1..1
    mouth: str
    blush: bool
    background: str
    bg_period: float      # pattern period, fraction of the canvas
    bg_angle: float       # stripe angle, degrees
    light_angle: float    # direction towards the light, radians, image coordinates
    shadow_depth: float   # 0..1: how much darker shadows are

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> "Geometry":
        raw = json.loads(s)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def sample_geometry(rng: np.random.Generator) -> Geometry:
    u = rng.uniform
    # Every framing but the rare close-up keeps the waistband in view, so nearly
    # all characters show every part (the per-part benchmark needs them).
    framing = _pick(rng, [(0.3, "full"), (0.32, "half"), (0.3, "bust"), (0.08, "closeup")])
    if framing == "full":
        scale, top = u(0.092, 0.105), u(0.03, 0.06)
    elif framing == "half":
        scale, top = u(0.13, 0.165), u(0.04, 0.1)
    elif framing == "bust":
        scale, top = u(0.17, 0.2), u(0.02, 0.05)
    else:
        scale, top = u(0.21, 0.25), u(0.03, 0.1)
    hair_style = _pick(rng, [(0.2, "short"), (0.2, "bob"), (0.25, "long"), (0.2, "twintails"),
                             (0.15, "ponytail")])
    n_bangs = int(rng.integers(3, 7))
    left_up, right_up = u(4, 40), u(4, 40)
    if rng.random() < 0.2:  # one arm waving
        right_up = u(100, 150)
    return Geometry(
        framing=framing,
        cx=float(0.5 + u(-0.06, 0.06)),
        cy=float(top + 2.45 * scale),
        scale=float(scale),
        lean=float(u(-5, 5)),
        head_tilt=float(u(-10, 10)),
        face_shift=float(u(-0.1, 0.1)),
        arms=(float(left_up), float(u(-15, 30)), float(right_up), float(u(-15, 30))),
        leg_spread=float(u(0.0, 0.3)),
        hair_style=hair_style,
        back_len=float(u(2.6, 5.5)),
        bangs=tuple(float(x) for x in u(-1, 1, n_bangs)),
        side_locks=bool(rng.random() < 0.7),
        ahoge=bool(rng.random() < 0.35),
        upper_type=str(_pick(rng, [(0.3, "tshirt"), (0.3, "sailor"), (0.2, "jacket"),
                                   (0.2, "blouse")])),
        long_sleeves=bool(rng.random() < 0.45),
        lower_type=str(_pick(rng, [(0.3, "skirt"), (0.3, "pleated"), (0.25, "trousers"),
                                   (0.15, "shorts")])),
        skirt_len=float(u(1.0, 1.8)),
        accessory=str(_pick(rng, [(0.35, "none"), (0.2, "bow"), (0.15, "beret"),
                                  (0.15, "neck_ribbon"), (0.15, "hairclip")])),
        eye_size=float(u(0.9, 1.18)),
        eye_gap=float(u(0.92, 1.08)),
        look=float(u(-1, 1)),
        mouth=str(_pick(rng, [(0.4, "smile"), (0.25, "open"), (0.15, "cat"), (0.2, "small")])),
        blush=bool(rng.random() < 0.55),
        background=str(_pick(rng, [(0.3, "flat"), (0.3, "gradient"), (0.2, "stripes"),
                                   (0.2, "dots")])),
        bg_period=float(u(0.08, 0.2)),
        bg_angle=float(rng.choice([0.0, 45.0, 90.0, 135.0])),
        light_angle=float(u(-0.8, -0.2) * math.pi),
        shadow_depth=float(u(0.2, 0.32)),
    )


# ----------------------------------------------------------------------------- shapes
# Shapes are float arrays of (x, y) points in a local frame (head radii, y down).

@lru_cache(maxsize=256)
def _unit_arc(a0: float, a1: float, n: int) -> np.ndarray:
    a = np.radians(np.linspace(a0, a1, n, endpoint=(a1 - a0) % 360 != 0))
    return np.stack([np.cos(a), np.sin(a)], 1)


def _ellipse(cx, cy, rx, ry, a0=0.0, a1=360.0, n=24) -> np.ndarray:
    return _unit_arc(float(a0), float(a1), n) * (rx, ry) + (cx, cy)


@lru_cache(maxsize=32)
def _bezier_basis(n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return np.concatenate([(1 - t) ** 2, 2 * (1 - t) * t, t ** 2], 1)


def _bezier(p0, p1, p2, n=6) -> np.ndarray:
    """Quadratic Bezier from p0 to p2 pulled towards p1, n points."""
    return _bezier_basis(n) @ np.array([p0, p1, p2], float)


def _chaikin(pts: np.ndarray, iters: int = 2) -> np.ndarray:
    for _ in range(iters):
        nxt = np.roll(pts, -1, 0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], 1).reshape(-1, 2)
    return pts


def _limb(p0, p1, w0, w1, n=7) -> np.ndarray:
    """Tapered capsule from p0 (half-width w0) to p1 (half-width w1)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    a = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
    end = _ellipse(p1[0], p1[1], w1, w1, math.degrees(a) - 90, math.degrees(a) + 90, n)
    start = _ellipse(p0[0], p0[1], w0, w0, math.degrees(a) + 90, math.degrees(a) + 270, n)
    return np.concatenate([end, start])


def _polar(origin, length, deg_from_down, side) -> np.ndarray:
    """Point `length` away from origin; angle measured from straight down, outward."""
    a = math.radians(deg_from_down)
    return np.asarray(origin, float) + length * np.array([side * math.sin(a), math.cos(a)])


def _tube(p0, p1, p2, w0, w1, w2, n=7) -> np.ndarray:
    """A limb bent at p1 (elbow/knee) as one outline: no seam at the joint."""
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    a1 = math.atan2(*(p1 - p0)[::-1])
    a2 = math.atan2(*(p2 - p1)[::-1])
    n1 = np.array([math.sin(a1), -math.cos(a1)])
    n2 = np.array([math.sin(a2), -math.cos(a2)])
    nm = n1 + n2
    nm = nm / max(np.linalg.norm(nm), 1e-6)
    wm = w1 / max(float(nm @ n1), 0.5)
    end = _ellipse(p2[0], p2[1], w2, w2, math.degrees(a2) - 90, math.degrees(a2) + 90, n)
    start = _ellipse(p0[0], p0[1], w0, w0, math.degrees(a1) + 90, math.degrees(a1) + 270, n)
    return np.concatenate([[p0 + n1 * w0, p1 + nm * wm], end, [p1 - nm * wm], start])


def _affine(scale=1.0, rot_deg=0.0, tx=0.0, ty=0.0) -> np.ndarray:
    c, s = math.cos(math.radians(rot_deg)) * scale, math.sin(math.radians(rot_deg)) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], float)


# ----------------------------------------------------------------------------- canvas

class _Canvas:
    """Label / layer / tone maps drawn together: channel 0 label, 1 layer, 2 tone."""

    def __init__(self, size: int, lw: int):
        self.size = size
        self.buf = np.zeros((size, size, 3), np.uint8)
        self.lw = lw
        self.M = np.eye(3)
        self.layers = 0
        self.form = [False]  # per layer: does it get form shadow (layer 0 = background)

    def layer(self, form: bool = True) -> int:
        self.layers += 1
        if self.layers > 255:
            raise RuntimeError("toon: more than 255 layers")
        self.form.append(form)
        return self.layers

    def px(self, pts: np.ndarray) -> np.ndarray:
        p = np.asarray(pts, float) @ self.M[:2, :2].T + self.M[:2, 2]
        return np.round(p * (1 << _FIX)).astype(np.int32)

    def fill(self, pts, label, layer, tone=BASE, outline=True, lw=None):
        p = self.px(pts)
        cv2.fillPoly(self.buf, [p], (label, layer, tone), cv2.LINE_8, _FIX)
        if outline:
            cv2.polylines(self.buf, [p], True, (LINE, layer, BASE), lw or self.lw, cv2.LINE_8,
                          _FIX)

    def line(self, pts, layer, lw=None, closed=False, label=LINE, tone=BASE):
        cv2.polylines(self.buf, [self.px(pts)], closed, (label, layer, tone), lw or self.lw,
                      cv2.LINE_8, _FIX)

    @contextmanager
    def clip(self, pts, allow):
        """Drawing inside the block only lands where allow(saved_roi, inside_pts) holds."""
        p = self.px(pts) >> _FIX
        x0, y0 = np.maximum(p.min(0) - self.lw - 2, 0)
        x1, y1 = np.minimum(p.max(0) + self.lw + 3, self.size)
        if x1 <= x0 or y1 <= y0:
            yield
            return
        saved = self.buf[y0:y1, x0:x1].copy()
        inside = np.zeros(saved.shape[:2], np.uint8)
        cv2.fillPoly(inside, [self.px(pts) - (np.array([x0, y0]) << _FIX)], 1, cv2.LINE_8, _FIX)
        yield
        keep = ~allow(saved, inside.astype(bool))
        self.buf[y0:y1, x0:x1][keep] = saved[keep]

    @contextmanager
    def transform(self, M):
        old = self.M
        self.M = old @ M
        yield
        self.M = old


# ----------------------------------------------------------------------------- character

def _tail_anchors(g: Geometry) -> list[tuple[int, float, float]]:
    if g.hair_style == "twintails":
        return [(-1, -0.9, -0.6), (1, 0.9, -0.6)]
    if g.hair_style == "ponytail":
        side = 1 if g.look >= 0 else -1
        return [(side, side * 0.92, -0.55)]
    return []


def _draw_back_hair(cv: _Canvas, g: Geometry):
    st = g.hair_style
    hair = cv.layer()
    if st in ("long", "bob"):
        L = g.back_len + 0.4 if st == "long" else 1.25
        w = 1.32 if st == "long" else 1.3
        top = _ellipse(0, -0.02, 1.2, 1.18, 180, 360, 16)
        right = _bezier((1.2, 0.0), (w + 0.15, L * 0.5), (w, L), 6)
        n = 5 if st == "long" else 4
        xs = np.linspace(w, -w, 2 * n + 1)
        hem = [(x, L + (0.0 if i % 2 == 0 else -0.35 - 0.1 * (i % 3))) for i, x in enumerate(xs)]
        left = right[::-1] * np.array([-1, 1])
        poly = np.concatenate([top, right, np.array(hem)[1:-1], left])
        cv.fill(poly, HAIR, hair)
        # A few strand lines give the mass some texture.
        for x in (-0.6 * w, 0.55 * w):
            cv.line(_bezier((x * 0.7, 0.6), (x * 1.05, L * 0.6), (x, L - 0.45)), hair,
                    lw=max(1, cv.lw // 2))
    else:
        poly = np.concatenate([_ellipse(0, -0.02, 1.18, 1.18, 170, 370, 18),
                               [(1.1, 0.75), (0.7, 0.55), (0.0, 0.75), (-0.7, 0.55),
                                (-1.1, 0.75)]])
        cv.fill(_chaikin(poly, 1), HAIR, hair)
    for side, ax, ay in _tail_anchors(g):
        L = g.back_len + 0.8
        outer = _bezier((ax, ay - 0.2), (side * 2.3, ay + 0.6 * L), (side * 1.5, ay + L), 9)
        inner = _bezier((side * 1.5, ay + L), (side * 1.4, ay + 0.5 * L), (ax, ay + 0.3), 9)
        t = cv.layer()
        cv.fill(np.concatenate([outer, inner[1:]]), HAIR, t)
        cv.line(_bezier((side * 1.1, ay + 0.4), (side * 1.85, ay + 0.55 * L),
                        (side * 1.55, ay + 0.85 * L), 7), t, lw=max(1, cv.lw // 2))


def _draw_face(cv: _Canvas, g: Geometry, face: int):
    sh = g.face_shift
    cv.fill(_chaikin(np.array([(-1.0, -0.2), (-0.95, -0.75), (-0.55, -1.0), (0.0, -1.05),
                               (0.55, -1.0), (0.95, -0.75), (1.0, -0.2), (0.95, 0.35),
                               (0.72, 0.7), (0.3, 0.93), (0.0, 1.0), (-0.3, 0.93),
                               (-0.72, 0.7), (-0.95, 0.35)]), 2), SKIN, face)
    thin = max(1, cv.lw * 2 // 3)
    es, ey = g.eye_size, 0.22
    ew, eh = 0.215 * es, 0.29 * es
    for side in (-1, 1):
        ex = side * 0.41 * g.eye_gap + sh
        t = np.radians(np.linspace(0, 360, 24, endpoint=False))
        eye = np.stack([ex + ew * np.sign(np.cos(t)) * np.abs(np.cos(t)) ** 0.75,
                        ey + eh * np.sign(np.sin(t)) * np.abs(np.sin(t)) ** 0.8], 1)
        cv.fill(eye, EYES, face, tone=WHITE, outline=False)
        ic = (ex + 0.22 * ew * g.look, ey + 0.1 * eh)
        with cv.clip(eye, lambda saved, inside: inside):
            cv.fill(_ellipse(ic[0], ic[1], 0.8 * ew, 0.95 * eh, n=20), EYES, face, SHADOW,
                    outline=False)
            cv.fill(_ellipse(ic[0], ic[1] + 0.26 * eh, 0.68 * ew, 0.62 * eh, n=20), EYES,
                    face, BASE, outline=False)
            cv.fill(_ellipse(ic[0], ic[1] + 0.58 * eh, 0.42 * ew, 0.25 * eh, n=14), EYES,
                    face, LIGHT, outline=False)
            cv.fill(_ellipse(ic[0], ic[1] + 0.05 * eh, 0.34 * ew, 0.45 * eh, n=16), EYES,
                    face, DARK, outline=False)
            cv.line(_ellipse(ic[0], ic[1], 0.8 * ew, 0.95 * eh, n=20), face, lw=thin,
                    closed=True, label=EYES, tone=DARK)
            lx = -1 if math.cos(g.light_angle) < 0 else 1
            cv.fill(_ellipse(ic[0] + lx * 0.3 * ew, ic[1] - 0.35 * eh, 0.3 * ew, 0.24 * eh,
                             n=12), EYES, face, WHITE, outline=False)
            cv.fill(_ellipse(ic[0] - lx * 0.32 * ew, ic[1] + 0.42 * eh, 0.12 * ew, 0.1 * eh,
                             n=8), EYES, face, WHITE, outline=False)
        # Thick upper lash with a flick at the outer corner; short lower lid.
        lash = _ellipse(ex, ey + 0.06 * eh, ew * 1.08, eh * 1.02, 192, 348, 12)
        lash = np.concatenate([lash, [(ex + side * ew * 1.35, ey - 0.55 * eh)]]) if side > 0 \
            else np.concatenate([[(ex - ew * 1.35, ey - 0.55 * eh)], lash])
        cv.line(lash, face, lw=max(2, cv.lw * 2))
        cv.line(_ellipse(ex, ey, ew * 0.8, eh * 1.05, 65, 115, 5), face, lw=thin)
        cv.line(_bezier((ex - side * 0.2, ey - eh - 0.2), (ex + side * 0.05, ey - eh - 0.3),
                        (ex + side * 0.25, ey - eh - 0.22), 5), face, lw=thin)
    if g.blush:
        for side in (-1, 1):
            cv.fill(_ellipse(side * 0.56 + sh, 0.58, 0.17, 0.07, n=12), SKIN, face, BLUSH,
                    outline=False)
    mx, my = sh * 0.9, 0.7
    cv.line([(mx + 0.02, 0.5), (mx + 0.04, 0.52)], face, lw=thin)  # nose
    if g.mouth == "smile":
        cv.line(_ellipse(mx, my - 0.06, 0.12, 0.07, 20, 160, 7), face, lw=thin)
    elif g.mouth == "open":
        m = np.concatenate([[(mx - 0.11, my - 0.03), (mx + 0.11, my - 0.03)],
                            _ellipse(mx, my - 0.03, 0.11, 0.13, 0, 180, 8)[1:-1]])
        cv.fill(m, SKIN, face, DARK, lw=thin)
    elif g.mouth == "cat":
        cv.line(_ellipse(mx - 0.06, my - 0.03, 0.06, 0.05, 10, 170, 6), face, lw=thin)
        cv.line(_ellipse(mx + 0.06, my - 0.03, 0.06, 0.05, 10, 170, 6), face, lw=thin)
    else:
        cv.line([(mx - 0.06, my), (mx + 0.06, my)], face, lw=thin)


def _draw_front_hair(cv: _Canvas, g: Geometry):
    cap = cv.layer()
    arc = _ellipse(0, -0.04, 1.13, 1.15, 162, 378, 24)
    n = len(g.bangs)
    xs = np.linspace(0.62, -0.62, n)
    fringe = [(1.02, 0.42), (0.84, -0.34)]
    for i, x in enumerate(xs):
        tip = (x + 0.06 * g.bangs[i], -0.02 - 0.16 * abs(x) + 0.1 * g.bangs[i])
        root_r = fringe[-1]
        root_l = (xs[i + 1] + (xs[i] - xs[i + 1]) * 0.5, -0.48 - 0.08 * abs(x)) \
            if i + 1 < n else (-0.84, -0.34)
        lean = 0.12 * (1 if x > 0 else -1)
        fringe += list(_bezier(root_r, ((root_r[0] + tip[0]) / 2 + lean,
                                         (root_r[1] + tip[1]) / 2), tip, 5)[1:])
        fringe += list(_bezier(tip, ((tip[0] + root_l[0]) / 2 + lean,
                                     (tip[1] + root_l[1]) / 2 + 0.05), root_l, 5)[1:])
    fringe += [(-1.02, 0.42)]
    poly = np.concatenate([arc, np.array(fringe)])
    cv.fill(poly, HAIR, cap)
    # Highlight band: a jagged arc across the crown, clipped to the hair cap.
    a = np.linspace(205, 335, 14)
    r_out = 0.82 + 0.0 * a
    r_in = 0.66 + 0.1 * (np.arange(len(a)) % 2)
    outer = np.stack([r_out * np.cos(np.radians(a)), r_out * np.sin(np.radians(a)) - 0.1], 1)
    inner = np.stack([r_in * np.cos(np.radians(a)), r_in * np.sin(np.radians(a)) - 0.1], 1)
    band = np.concatenate([outer, inner[::-1]])
    with cv.clip(band, lambda s, inside: inside & (s[..., 1] == cap) & (s[..., 0] == HAIR)):
        cv.fill(band, HAIR, cap, LIGHT, outline=False)
    if g.side_locks:
        for side in (-1, 1):
            lock = cv.layer()
            end = 0.95 + 0.5 * (g.back_len - 2.6) / 2.9
            pts = np.concatenate([
                _bezier((side * 0.76, -0.45), (side * 0.9, 0.3), (side * 0.84, end), 6),
                _bezier((side * 0.84, end), (side * 1.15, 0.4), (side * 1.1, -0.4), 6)[1:]])
            cv.fill(pts, HAIR, lock)
    ties = ACC if g.accessory != "none" else HAIR
    for side, ax, ay in _tail_anchors(g):
        tie = cv.layer()
        cv.fill(_ellipse(ax + side * 0.12, ay + 0.05, 0.13, 0.17, n=12), ties, tie,
                tone=BASE if ties == ACC else DARK)
    if g.ahoge:
        ah = cv.layer()
        pts = np.concatenate([_bezier((-0.05, -1.1), (0.0, -1.6), (0.45, -1.55), 6),
                              _bezier((0.45, -1.55), (0.1, -1.5), (0.12, -1.1), 6)[1:]])
        cv.fill(pts, HAIR, ah)


def _draw_head_accessory(cv: _Canvas, g: Geometry):
    if g.accessory == "bow":
        acc = cv.layer()
        side = 1 if g.look < 0 else -1
        c = np.array([side * 0.6, -0.95])
        for s in (-1, 1):
            loop = np.array([c, c + (s * 0.5, -0.32), c + (s * 0.58, 0.05), c + (s * 0.42, 0.22)])
            cv.fill(_chaikin(loop, 1), ACC, acc)
        cv.fill(_ellipse(c[0], c[1], 0.12, 0.13, n=10), ACC, acc)
    elif g.accessory == "beret":
        acc = cv.layer()
        body = np.concatenate([_ellipse(0.1, -0.95, 1.25, 0.5, 170, 370, 20),
                               _ellipse(0.1, -0.98, 1.05, 0.12, 10, 170, 10)])
        cv.fill(body, ACC, acc)
        cv.fill(_ellipse(0.15, -1.47, 0.08, 0.08, n=8), ACC, acc)
    elif g.accessory == "hairclip":
        acc = cv.layer()
        side = 1 if g.look < 0 else -1
        for k in (0, 1):
            x = side * (0.5 + 0.14 * k)
            cv.fill(_limb((x - 0.1, -0.62 - 0.05 * k), (x + 0.1, -0.48 - 0.05 * k), 0.05, 0.05, 4),
                    ACC, acc)


def _draw_body(cv: _Canvas, g: Geometry):
    spread = g.leg_spread
    # Legs and shoes.
    for side in (-1, 1):
        hip, ankle = (side * 0.36, 2.3), (side * (0.4 + spread), 5.45)
        if g.lower_type != "trousers":
            leg = cv.layer()
            cv.fill(_limb(hip, ankle, 0.31, 0.15), SKIN, leg)
        shoe = cv.layer()
        cv.fill(_ellipse(ankle[0] + side * 0.1, ankle[1] + 0.16, 0.27, 0.16, n=14), LOWER, shoe,
                DARK)
    # Lower garment.
    lt = g.lower_type
    if lt in ("skirt", "pleated"):
        sk = cv.layer()
        L, w = g.skirt_len, 1.05 + 0.35 * g.skirt_len
        hem = _ellipse(0, 1.95 + L - 0.15, w, 0.18, 0, 180, 12)
        cv.fill(np.concatenate([[(-0.7, 1.95), (0.7, 1.95)], hem]), LOWER, sk)
        if lt == "pleated":
            for x in (-0.55, -0.2, 0.2, 0.55):
                cv.line([(x * 0.7 / 0.75, 2.05), (x * w / 0.75 * 0.95, 1.95 + L)], sk,
                        lw=max(1, cv.lw // 2))
    else:
        end = 5.3 if lt == "trousers" else 3.05
        for side in (-1, 1):
            leg = cv.layer()
            foot = (side * (0.38 + spread * (end - 2.3) / 3.15), end)
            cv.fill(_limb((side * 0.36, 2.35), foot, 0.4, 0.28 if lt == "trousers" else 0.36),
                    LOWER, leg)
        hips = cv.layer()
        cv.fill(_chaikin(np.array([(-0.72, 1.95), (0.72, 1.95), (0.8, 2.6), (0.0, 2.75),
                                   (-0.8, 2.6)]), 1), LOWER, hips)
    # Neck, then the torso over it (the neckline shows skin).
    neck = cv.layer()
    cv.fill(np.array([(-0.2, -0.7), (0.2, -0.7), (0.24, 0.45), (-0.24, 0.45)]), SKIN, neck)
    torso = cv.layer()
    ut = g.upper_type
    hem_y = 2.25 if ut == "jacket" else 2.1
    neckline = [(-0.3, -0.02), (-0.14, 0.24), (0.0, 0.3), (0.14, 0.24), (0.3, -0.02)]
    body = np.array(neckline + [(0.8, 0.12), (1.0, 0.45), (0.82, 1.3), (0.76, hem_y),
                                (-0.76, hem_y), (-0.82, 1.3), (-1.0, 0.45), (-0.8, 0.12)])
    cv.fill(np.concatenate([body[:5], _chaikin(body[4:], 1)[:-1]]), UPPER, torso)
    thin = max(1, cv.lw // 2)
    if ut == "sailor":
        collar = np.array([(-0.32, -0.02), (0.0, 0.95), (0.32, -0.02), (0.85, 0.15),
                           (0.55, 0.6), (0.0, 1.15), (-0.55, 0.6), (-0.85, 0.15)])
        cv.fill(collar, UPPER, torso, ALT)
        cv.line(np.array([(-0.7, 0.22), (-0.45, 0.6), (0.0, 1.02), (0.45, 0.6), (0.7, 0.22)]),
                torso, lw=thin, label=UPPER, tone=WHITE)
    elif ut == "jacket":
        cv.fill(np.array([(-0.3, -0.02), (0.3, -0.02), (0.22, hem_y), (-0.22, hem_y)]), UPPER,
                torso, WHITE)
        for s in (-1, 1):
            cv.fill(np.array([(s * 0.3, -0.02), (s * 0.5, 0.2), (s * 0.32, 0.7),
                              (s * 0.2, hem_y)]), UPPER, torso, BASE)
        cv.fill(_ellipse(-0.12, 1.4, 0.05, 0.05, n=8), UPPER, torso, DARK, outline=False)
    elif ut == "blouse":
        cv.fill(np.array([(-0.3, -0.02), (0.0, 0.3), (-0.15, 0.45), (-0.45, 0.12)]), UPPER,
                torso, WHITE)
        cv.fill(np.array([(0.3, -0.02), (0.0, 0.3), (0.15, 0.45), (0.45, 0.12)]), UPPER,
                torso, WHITE)
        cv.line([(0.0, 0.32), (0.0, hem_y)], torso, lw=thin)
    if g.accessory == "neck_ribbon" or ut == "sailor":
        lab = ACC if g.accessory == "neck_ribbon" else UPPER
        tone = BASE if lab == ACC else ALT
        rib = cv.layer()
        c = np.array([0.0, 0.62 if ut == "sailor" else 0.32])
        for s in (-1, 1):
            cv.fill(np.array([c, c + (s * 0.4, -0.2), c + (s * 0.42, 0.16)]), lab, rib, tone)
            cv.fill(np.array([c, c + (s * 0.08, 0.55), c + (s * 0.3, 0.5)]), lab, rib, tone)
        cv.fill(_ellipse(c[0], c[1], 0.09, 0.09, n=8), lab, rib, tone)
    # Arms, in front of the torso: hand first, so the sleeve/forearm covers the wrist.
    for i, side in enumerate((-1, 1)):
        up, fore = g.arms[2 * i], g.arms[2 * i + 1]
        shoulder = np.array([side * 0.78, 0.38])
        elbow = _polar(shoulder, 1.1, up, side)
        bend = up + fore if up < 90 else up - fore - 40
        wrist = _polar(elbow, 1.0, bend, side)
        hand = cv.layer()
        d = (wrist - elbow) / np.linalg.norm(wrist - elbow)
        cv.fill(_ellipse(*(wrist + d * 0.12), 0.16, 0.16, n=12), SKIN, hand)
        arm = cv.layer()
        cv.fill(_tube(shoulder, elbow, wrist, 0.21, 0.17, 0.13), SKIN, arm)
        sleeve = cv.layer()
        if g.long_sleeves:
            cuff = wrist + (elbow - wrist) * 0.08
            cv.fill(_tube(shoulder, elbow, cuff, 0.27, 0.23, 0.21), UPPER, sleeve)
        else:
            cv.fill(_limb(shoulder, shoulder + (elbow - shoulder) * 0.55, 0.28, 0.26), UPPER,
                    sleeve)


# ----------------------------------------------------------------------------- render

BG_LEVELS = 256 - 8 * N_TONES   # background mix levels that fit the uint8 lookup


def _background_t(g: Geometry, S: int) -> np.ndarray | None:
    """Mix level 0..BG_LEVELS-1 between background and background2 (None: flat).

    Built from 1-D profiles so it costs one 2-D operation per pattern."""
    if g.background == "flat":
        return None
    c = (np.arange(S, dtype=np.float32) + 0.5) / S
    top = BG_LEVELS - 1
    if g.background == "gradient":
        return np.broadcast_to((c * top + 0.5).astype(np.uint8)[:, None], (S, S))
    if g.background == "stripes":
        a = math.radians(g.bg_angle)
        proj = (c * math.cos(a) / g.bg_period)[None, :] + (c * math.sin(a) / g.bg_period)[:, None]
        return ((proj % 1.0) < 0.5).astype(np.uint8) * np.uint8(top)
    p = g.bg_period
    dy2 = ((c / p) % 1.0 - 0.5) ** 2
    dx2 = np.stack([((c / p + shift) % 1.0 - 0.5) ** 2 for shift in (0.0, 0.5)])
    row_parity = (np.floor(c / p) % 2).astype(np.intp)
    return ((dx2[row_parity] + dy2[:, None]) < 0.2 ** 2).astype(np.uint8) * np.uint8(top)


def _shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """out[y, x] = a[y + dy, x + dx], zero (background layer) outside."""
    H, W = a.shape
    out = np.zeros_like(a)
    ys, yd = (slice(dy, H), slice(0, H - dy)) if dy >= 0 else (slice(0, H + dy), slice(-dy, H))
    xs, xd = (slice(dx, W), slice(0, W - dx)) if dx >= 0 else (slice(0, W + dx), slice(-dx, W))
    out[yd, xd] = a[ys, xs]
    return out


def rasterize(geometry: Geometry, size: int, ss: int = SS) -> np.ndarray:
    """Label, layer and shaded tone maps at ss x size: uint8 (S, S, 3)."""
    g = geometry
    S = size * ss
    R = g.scale * S
    # Outlines about 1 px at 128 and up, thinner (relative to the image) below, so
    # small renders are not all ink.
    cv = _Canvas(S, lw=max(1, round(0.06 * R), round(ss * min(1.0, size / 128))))
    body = _affine(R, g.lean, g.cx * S, g.cy * S)
    head = _affine(1.0, g.head_tilt, 0.0, -0.3) @ _affine(1.0, 0.0, 0.0, -1.02)
    with cv.transform(body):
        with cv.transform(head):
            _draw_back_hair(cv, g)
        _draw_body(cv, g)
        with cv.transform(head):
            face = cv.layer(form=False)
            _draw_face(cv, g, face)
            _draw_front_hair(cv, g)
            _draw_head_accessory(cv, g)
    buf = cv.buf
    lab, lid, tone = buf[..., 0], buf[..., 1], buf[..., 2]
    lx, ly = math.cos(g.light_angle), math.sin(g.light_angle)
    dF, dC = 0.2 * R, 0.13 * R
    away = _shift(lid, -round(dF * lx), -round(dF * ly))
    toward = _shift(lid, round(dC * lx), round(dC * ly))
    form_lut = np.zeros(256, np.uint8)
    form_lut[:len(cv.form)] = cv.form
    shade_lut = np.zeros(256, np.uint8)  # (label, tone) pairs that cel shading may darken
    for part in (SKIN, HAIR, UPPER, LOWER, ACC):
        shade_lut[[part * N_TONES + BASE, part * N_TONES + LIGHT]] = 1
    shadeable = cv2.LUT(lab * np.uint8(N_TONES) + tone, shade_lut).view(bool)
    form_ok = cv2.LUT(lid, form_lut).view(bool)
    shadow = shadeable & (((away < lid) & form_ok) | (toward > lid))
    np.copyto(tone, np.uint8(SHADOW), where=shadow)
    return buf


# Each label is one 4-bit counter of a uint32 (up to 15 samples: ss <= 3), so
# summing the footprint counts all eight labels in one pass.
_PACK = (np.uint32(1) << (4 * np.arange(8, dtype=np.uint32))).astype(np.uint32)


def _downsample_mask(lab: np.ndarray, size: int, ss: int) -> np.ndarray:
    assert ss * ss <= 15, "4-bit label counters"
    packed = np.take(_PACK, lab)
    cols = sum(packed[:, i::ss] for i in range(ss))      # strided adds beat sum(axis)
    packed = sum(cols[i::ss] for i in range(ss))
    mask = np.zeros((size, size), np.uint8)
    best = packed & 15
    for k in range(1, LINE):
        c = (packed >> np.uint32(4 * k)) & 15
        np.copyto(mask, np.uint8(k), where=c > best)  # ties keep the lower label
        np.maximum(best, c, out=best)
    mask[(packed >> np.uint32(4 * LINE)) * 2 >= ss * ss] = LINE
    return mask


def _colourize(maps: np.ndarray, g: Geometry, palette: Palette, size: int, ss: int):
    lab, tone = maps[..., 0], maps[..., 2]
    # One uint8 index per pixel: part*N_TONES + tone, or past that a background
    # mix level; then a single cv2.LUT does all the colouring.
    lut = np.zeros((256, 3), np.uint8)
    lut[:8 * N_TONES] = tone_table(palette, g.shadow_depth)
    mix = np.linspace(0.0, 1.0, BG_LEVELS, dtype=np.float32)[:, None]
    c0 = np.array(palette.background, np.float32)
    c1 = np.array(palette.background2, np.float32)
    lut[8 * N_TONES:] = (c0 + mix * (c1 - c0) + 0.5).astype(np.uint8)
    idx = lab * np.uint8(N_TONES) + tone
    t = _background_t(g, size * ss)
    bg = np.uint8(8 * N_TONES)
    idx = np.where(lab == BG, bg if t is None else t + bg, idx).astype(np.uint8)
    img = cv2.LUT(cv2.merge([idx, idx, idx]), lut.reshape(256, 1, 3))
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def render(geometry: Geometry, palette: Palette, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, mask HxW uint8) of one character at size x size."""
    if size < 8:
        raise ValueError(f"toon size must be >= 8, got {size}")
    maps = rasterize(geometry, size)
    return _colourize(maps, geometry, palette, size, SS), _downsample_mask(maps[..., 0], size, SS)


@dataclass
class Toon:
    image: np.ndarray      # HxWx3 uint8 RGB
    mask: np.ndarray       # HxW uint8 part labels (PARTS)
    palette: Palette
    geometry: Geometry
    seed: int


def generate(seed: int, size: int = 128) -> Toon:
    """The character of `seed`: geometry and palette come from independent streams,
    so the same seed always gives the same bytes."""
    g_seq, p_seq = np.random.SeedSequence(int(seed)).spawn(2)
    geometry = sample_geometry(np.random.default_rng(g_seq))
    palette = sample_palette(np.random.default_rng(p_seq))
    image, mask = render(geometry, palette, size)
    return Toon(image, mask, palette, geometry, int(seed))


def rerender(toon: Toon, palette: Palette) -> np.ndarray:
    """Toon's geometry painted with another palette (same mask, same shapes)."""
    maps = rasterize(toon.geometry, toon.image.shape[0])
    return _colourize(maps, toon.geometry, palette, toon.image.shape[0], SS)
