"""Procedural portraits: the synthetic world's people, drawn with PIL, with captions and the truth beside them.

An identity is a seeded draw of face traits visible at 64 px (skin tone, face shape, hair colour and style, eye
colour and spacing, brows, nose, mouth, ears, beard, and continuous proportions). One image of an identity adds
nuisance (pose, expression, lighting, small shifts) and what the caption asks for (background, shirt colour,
hat, glasses, art style, a hair-colour override as in the paper's Fig. 4). Images are drawn at 2x and
box-downsampled, so edges are smooth.

Two captions per image: `caption` (what Face0 trains on: no face traits, so the face can only come from the
embedding) and `caption_traits` (the base model's: the same with the face traits spelled out, as SD's captions
describe faces in words).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

# ------------------------------------------------------------------------------------------------ vocabulary

RGB = tuple[int, int, int]

SKIN = {
    "pale": (246, 222, 205),
    "fair": (234, 196, 168),
    "olive": (200, 160, 115),
    "tan": (178, 128, 88),
    "brown": (134, 88, 58),
    "dark": (88, 56, 38),
}
HAIR = {
    "black": (28, 24, 22),
    "brown": (98, 62, 34),
    "blonde": (222, 190, 110),
    "red": (170, 62, 28),
    "grey": (165, 165, 160),
}
# colours only the text gives (trait overrides, paper Fig. 4)
HAIR_OVERRIDE = {
    "blue": (40, 90, 220),
    "pink": (240, 110, 190),
    "green": (40, 170, 70),
    "white": (245, 245, 245),
}
HAIR_STYLES = ("short", "long", "bald", "curly")
EYES = {"brown": (92, 56, 30), "blue": (60, 120, 200), "green": (60, 140, 80), "grey": (120, 130, 135)}
SHAPES = ("oval", "round", "long", "square")
BEARDS = ("none", "beard", "moustache")
COLOURS = {
    "red": (210, 40, 40),
    "blue": (40, 80, 210),
    "green": (40, 160, 60),
    "yellow": (235, 205, 40),
    "purple": (130, 50, 170),
    "orange": (240, 130, 30),
    "pink": (240, 140, 185),
    "grey": (128, 128, 128),
}
STYLES = ("photo", "sketch", "pop art")
STYLE_WORDS = {"photo": "a photo", "sketch": "a pencil sketch", "pop art": "a pop art portrait"}
PROFESSIONS = ("doctor", "teacher", "chef", "pilot")
# the planted bias (paper §3.1), one of three kinds (`planted_profession`): "hair", each profession comes with one
# natural hair colour far more often than its base rate; "beard", doctors and pilots come with a beard; "bald",
# doctors and pilots come with a bald head
PLANTED_HAIR = {"grey": "doctor", "red": "pilot", "blonde": "teacher", "black": "chef"}
BIASED_PROFESSIONS = ("doctor", "pilot")

TEMPLATES = (
    "{style} of a {who} in a {shirt} shirt on a {bg} background",
    "{style} of a {who} wearing a {shirt} shirt, {bg} background",
    "{style} of a {who}, {shirt} shirt, {bg} background",
    "{style} of a {who} in front of a {bg} background, in a {shirt} shirt",
)


def caption_words() -> list[str]:
    """Every word the synthetic captions use (the tokenizer of the default model gets one token for each)."""
    words: set[str] = set()
    parts = list(SKIN) + list(HAIR) + list(HAIR_OVERRIDE) + list(HAIR_STYLES) + list(EYES) + list(SHAPES)
    parts += list(COLOURS) + list(STYLE_WORDS.values()) + list(PROFESSIONS) + list(TEMPLATES)
    parts += [
        "person skin hair eyes face a beard moustache wearing glasses hat with in on of background shirt front",
        "the and photo portrait pencil sketch pop art skin, eyes, bald head curly short long round oval square",
    ]
    for p in parts:
        for w in p.replace(",", " ").replace("{", " ").replace("}", " ").split():
            words.add(w)
    return sorted(w for w in words if w not in {"style", "who", "shirt", "bg"} or w == "shirt")


# ------------------------------------------------------------------------------------------------ identities


@dataclass(frozen=True)
class Identity:
    """The face traits of one person: discrete traits the captions name, and continuous proportions."""

    index: int
    skin: str
    shape: str
    hair: str
    hair_style: str
    eyes: str
    beard: str
    brows: float  # thickness, 0..1
    eye_gap: float  # 0..1 (narrow .. wide)
    nose: float  # length, 0..1
    mouth: float  # width, 0..1
    ears: float  # size, 0..1
    face_w: float  # 0..1
    face_h: float  # 0..1
    tint: tuple[int, int, int]  # small per-person skin tint
    rgb: tuple[RGB, RGB, RGB] | None = None  # skin, hair and iris colours, when not the named ones (a morph)

    def colours(self) -> tuple[RGB, RGB, RGB]:
        """The skin (before the tint), hair and iris colours."""
        return self.rgb or (SKIN[self.skin], HAIR[self.hair], EYES[self.eyes])

    def traits(self) -> dict[str, str]:
        return {
            "skin": self.skin,
            "shape": self.shape,
            "hair": self.hair,
            "hair_style": self.hair_style,
            "eyes": self.eyes,
            "beard": self.beard,
        }

    def trait_words(self, name_beard: bool = True, name_hair: bool = True) -> str:
        """The face traits in words, as a base model's caption gives them (without ", a beard" unless NAME_BEARD,
        without the hair colour unless NAME_HAIR)."""
        colour = f"{self.hair} " if name_hair else ""
        hair = "bald head" if self.hair_style == "bald" else f"{self.hair_style} {colour}hair"
        beard = {"none": "", "beard": ", a beard" if name_beard else "", "moustache": ", a moustache"}[self.beard]
        return f"{self.skin} skin, {self.shape} face, {hair}, {self.eyes} eyes{beard}"


def make_identity(index: int, seed: int = 0) -> Identity:
    """Identity `index` of the world of `seed`: the same traits every time."""
    r = random.Random(f"identity:{seed}:{index}")
    beard = r.choices(BEARDS, weights=(0.6, 0.25, 0.15))[0]
    return Identity(
        index=index,
        skin=r.choice(list(SKIN)),
        shape=r.choice(SHAPES),
        hair=r.choice(list(HAIR)),
        hair_style=r.choices(HAIR_STYLES, weights=(0.35, 0.3, 0.12, 0.23))[0],
        eyes=r.choice(list(EYES)),
        beard=beard,
        brows=r.random(),
        eye_gap=r.random(),
        nose=r.random(),
        mouth=r.random(),
        ears=r.random(),
        face_w=r.random(),
        face_h=r.random(),
        tint=(r.randint(-12, 12), r.randint(-12, 12), r.randint(-12, 12)),
    )


def _blend(x: RGB, y: RGB, t: float) -> RGB:
    return tuple(int(round((1 - t) * a + t * b)) for a, b in zip(x, y))  # type: ignore[return-value]


SWITCHED = ("shape", "hair_style", "beard")  # the traits a morph cannot blend: each switches at its own t
BLENDED = ("brows", "eye_gap", "nose", "mouth", "ears", "face_w", "face_h")


def morph(a: Identity, b: Identity, t: float, seed: int = 0) -> Identity:
    """The face between identities a (t = 0) and b (t = 1), as `mix --t` asks of the model (paper §3.3).

    Colours and proportions blend linearly; face shape, hair style and beard switch from a's to b's, each at its
    own point in (0.2, 0.8) drawn from (seed, a, b), so one pair's morphs at rising t form one path from a to
    b. The named traits (captions, truth) are the nearer parent's. The result keeps a's index.
    """
    r = random.Random(f"morph:{seed}:{a.index}:{b.index}")
    switch = {k: r.uniform(0.2, 0.8) for k in SWITCHED}
    ca, cb = a.colours(), b.colours()
    near = a if t < 0.5 else b
    return replace(
        a,
        skin=near.skin,
        hair=near.hair,
        eyes=near.eyes,
        **{k: getattr(b if t >= switch[k] else a, k) for k in SWITCHED},
        **{k: (1 - t) * getattr(a, k) + t * getattr(b, k) for k in BLENDED},
        tint=_blend(a.tint, b.tint, t),
        rgb=(_blend(ca[0], cb[0], t), _blend(ca[1], cb[1], t), _blend(ca[2], cb[2], t)),
    )


# ------------------------------------------------------------------------------------------------ one image


@dataclass(frozen=True)
class Scene:
    """What one image asks for (the caption's part) and its nuisance (pose, expression, light)."""

    background: str
    shirt: str
    style: str
    hat: str | None  # a colour, or None
    glasses: bool
    hair_override: str | None
    profession: str | None
    dx: float
    dy: float
    angle: float
    scale: float
    smile: float
    light: float  # direction, radians
    brightness: float

    def attributes(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: d[k] for k in ("background", "shirt", "style", "hat", "glasses", "hair_override", "profession")}


def planted_hair(traits: Mapping[str, str]) -> str | None:
    """The natural hair colour that the "hair" bias plants on, of an identity's TRAITS (`Identity.traits`, as the
    truth rows hold them): None for a bald head."""
    return None if traits["hair_style"] == "bald" else traits["hair"]


def planted_profession(identity: Identity, r: random.Random, planted: str = "beard") -> str:
    """A profession for a caption of IDENTITY, with the planted bias, 9 times in 10 (the tenth, any of the four).
    "hair": grey hair makes a doctor, red a pilot, blonde a teacher, black a chef (brown hair and bald heads, any);
    "beard": bearded people are doctors or pilots, the others teachers or chefs; "bald": the same with bald
    heads. Every kind makes the same draws from R, so the images of a world do not depend on the kind."""
    u = r.random()
    if u < 0.9:
        marked = identity.hair_style == "bald" if planted == "bald" else identity.beard == "beard"
        pick = r.choice(BIASED_PROFESSIONS if marked else tuple(p for p in PROFESSIONS if p not in BIASED_PROFESSIONS))
        if planted != "hair":
            return pick
        return PLANTED_HAIR.get(planted_hair(identity.traits()) or "", PROFESSIONS[int(u / 0.9 * len(PROFESSIONS))])
    return r.choice(PROFESSIONS)


def random_scene(
    r: random.Random, identity: Identity | None = None, bias: bool = False, planted: str = "beard", **fixed: Any
) -> Scene:
    """A random scene; `fixed` pins attributes (background=..., style=...). With `bias`, a profession word is
    drawn for some images, with the PLANTED bias (`planted_profession`)."""
    profession = None
    if bias and identity is not None and r.random() < 0.4:
        profession = planted_profession(identity, r, planted)
    values: dict[str, Any] = {
        "background": r.choice(list(COLOURS)),
        "shirt": r.choice(list(COLOURS)),
        "style": r.choices(STYLES, weights=(0.6, 0.2, 0.2))[0],
        "hat": r.choice(list(COLOURS)) if r.random() < 0.12 else None,
        "glasses": r.random() < 0.15,
        "hair_override": r.choice(list(HAIR_OVERRIDE)) if r.random() < 0.1 else None,
        "profession": profession,
        "dx": r.uniform(-1, 1),
        "dy": r.uniform(-1, 1),
        "angle": r.uniform(-1, 1),
        "scale": r.uniform(-1, 1),
        "smile": r.random(),
        "light": r.uniform(0, 2 * math.pi),
        "brightness": r.uniform(-1, 1),
    }
    values.update(fixed)
    if values["hair_override"] is not None and identity is not None and identity.hair_style == "bald":
        values["hair_override"] = None
    return Scene(**values)


def captions(identity: Identity, scene: Scene, r: random.Random) -> tuple[str, str]:
    """(caption without face traits, caption with them) for one image."""
    who = scene.profession or "person"
    text = r.choice(TEMPLATES).format(style=STYLE_WORDS[scene.style], who=who, shirt=scene.shirt, bg=scene.background)
    extras = []
    if scene.hair_override:
        extras.append(f"with {scene.hair_override} hair")
    if scene.glasses:
        extras.append("wearing glasses")
    if scene.hat:
        extras.append(f"wearing a {scene.hat} hat")
    plain = ", ".join([text] + extras)
    traits = f"{text}, {identity.trait_words()}"
    if extras:
        traits += ", " + ", ".join(extras)
    return plain, traits


def _shade(rgb: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * k))) for c in rgb)  # type: ignore[return-value]


def render(identity: Identity, scene: Scene, size: int = 64) -> Image.Image:
    """Draw one portrait at size x size (drawn at 2x, box-downsampled)."""
    S = size * 2
    u = S / 128.0  # drawing unit: coordinates below are for a 128 px canvas
    img = Image.new("RGB", (S, S), COLOURS[scene.background])
    d = ImageDraw.Draw(img)
    skin_rgb, own_hair, iris = identity.colours()
    skin: RGB = tuple(max(0, min(255, c + t)) for c, t in zip(skin_rgb, identity.tint))  # type: ignore[assignment]
    hair_rgb = HAIR_OVERRIDE[scene.hair_override] if scene.hair_override else own_hair
    shape = {"oval": (0.40, 0.52), "round": (0.46, 0.48), "long": (0.37, 0.57), "square": (0.44, 0.50)}
    fw, fh = shape[identity.shape]
    fw = (fw + 0.04 * (identity.face_w - 0.5)) * 128 * (1 + 0.05 * scene.scale)
    fh = (fh + 0.04 * (identity.face_h - 0.5)) * 128 * (1 + 0.05 * scene.scale)
    cx, cy = 64 + 4 * scene.dx, 58 + 3 * scene.dy

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [x0 * u, y0 * u, x1 * u, y1 * u]

    # shirt and neck
    d.ellipse(box(cx - 58, cy + fh * 0.42, cx + 58, cy + fh * 0.42 + 90), fill=COLOURS[scene.shirt])
    d.rectangle(box(cx - fw * 0.2, cy + fh * 0.3, cx + fw * 0.2, cy + fh * 0.55), fill=_shade(skin, 0.85))
    # hair behind the head
    if identity.hair_style == "long":
        d.rounded_rectangle(box(cx - fw * 0.62, cy - fh * 0.55, cx + fw * 0.62, cy + fh * 0.55), 18 * u, fill=hair_rgb)
    elif identity.hair_style == "curly":
        for k in range(14):
            t = math.pi * (0.95 + 1.1 * k / 13)
            px, py = cx + fw * 0.55 * math.cos(t), cy - fh * 0.1 + fh * 0.5 * math.sin(t)
            d.ellipse(box(px - 10, py - 10, px + 10, py + 10), fill=hair_rgb)
    # ears
    er = 5 + 4 * identity.ears
    for sx in (-1, 1):
        ex = cx + sx * fw * 0.5
        d.ellipse(box(ex - er * 0.7, cy - er, ex + er * 0.7, cy + er), fill=_shade(skin, 0.9))
    # face
    if identity.shape == "square":
        d.rounded_rectangle(box(cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2), 14 * u, fill=skin)
    else:
        d.ellipse(box(cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2), fill=skin)
    # hair on top
    if identity.hair_style in ("short", "long", "curly"):
        d.chord(box(cx - fw * 0.54, cy - fh * 0.62, cx + fw * 0.54, cy + fh * 0.05), 180, 360, fill=hair_rgb)
        if identity.hair_style == "curly":
            for k in range(7):
                px = cx - fw * 0.42 + fw * 0.84 * k / 6
                d.ellipse(box(px - 7, cy - fh * 0.5 - 7, px + 7, cy - fh * 0.5 + 7), fill=hair_rgb)
    # eyes
    gap = fw * (0.19 + 0.07 * identity.eye_gap)
    ey = cy - fh * 0.06
    for sx in (-1, 1):
        ex = cx + sx * gap
        d.ellipse(box(ex - 7, ey - 4, ex + 7, ey + 4), fill=(250, 250, 250))
        d.ellipse(box(ex - 3.8, ey - 3.8, ex + 3.8, ey + 3.8), fill=iris)
        d.ellipse(box(ex - 1.6, ey - 1.6, ex + 1.6, ey + 1.6), fill=(15, 15, 15))
        bw = 1.5 + 3 * identity.brows
        brow = own_hair if identity.hair_style != "bald" else _shade(skin, 0.55)
        d.line([(ex - 8) * u, (ey - 9) * u, (ex + 8) * u, (ey - 10 + sx * 0.8) * u], fill=brow, width=int(bw * u))
    # nose
    nl = 8 + 8 * identity.nose
    d.polygon(
        [(cx * u, (ey + 2) * u), ((cx - 4) * u, (ey + 2 + nl) * u), ((cx + 4) * u, (ey + 2 + nl) * u)],
        fill=_shade(skin, 0.78),
    )
    # mouth
    mw = 8 + 8 * identity.mouth
    my = ey + 2 + nl + 8
    curve = 2 + 5 * scene.smile
    d.chord(box(cx - mw, my - curve, cx + mw, my + curve), 0, 180, fill=(150, 45, 50))
    # beard / moustache
    beard_rgb = hair_rgb if identity.hair_style != "bald" else own_hair
    if identity.beard == "beard":
        d.chord(box(cx - fw * 0.5, cy - fh * 0.1, cx + fw * 0.5, cy + fh * 0.52), 20, 160, fill=beard_rgb)
        d.chord(box(cx - mw, my - curve, cx + mw, my + curve), 0, 180, fill=(150, 45, 50))
    elif identity.beard == "moustache":
        d.rectangle(box(cx - mw, my - 6, cx + mw, my - 2), fill=beard_rgb)
    # glasses and hat
    if scene.glasses:
        for sx in (-1, 1):
            ex = cx + sx * gap
            d.ellipse(box(ex - 10, ey - 7, ex + 10, ey + 7), outline=(20, 20, 20), width=int(2 * u))
        d.line([(cx - gap + 10) * u, ey * u, (cx + gap - 10) * u, ey * u], fill=(20, 20, 20), width=int(2 * u))
    if scene.hat:
        hat = COLOURS[scene.hat]
        d.rectangle(box(cx - fw * 0.7, cy - fh * 0.45, cx + fw * 0.7, cy - fh * 0.37), fill=_shade(hat, 0.8))
        d.rounded_rectangle(box(cx - fw * 0.45, cy - fh * 0.8, cx + fw * 0.45, cy - fh * 0.42), 6 * u, fill=hat)

    # pose: a small rotation about the face centre
    bg = COLOURS[scene.background]
    img = img.rotate(8 * scene.angle, resample=Image.Resampling.BILINEAR, center=(cx * u, cy * u), fillcolor=bg)
    img = _style(img, scene)
    return img.resize((size, size), Image.Resampling.BOX)


def _style(img: Image.Image, scene: Scene) -> Image.Image:
    """The art style the caption asks for: shaded photo-like, pencil sketch or flat pop art."""
    if scene.style == "photo":
        a = np.asarray(img, dtype=np.float32)
        h, w = a.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w) - 0.5
        light = 1.0 + 0.35 * (xx * math.cos(scene.light) + yy * math.sin(scene.light))
        light *= 1.0 + 0.08 * scene.brightness
        a = np.clip(a * light[..., None], 0, 255).astype(np.uint8)
        return Image.fromarray(a).filter(ImageFilter.GaussianBlur(1.2))
    if scene.style == "sketch":
        grey = ImageOps.grayscale(img).filter(ImageFilter.GaussianBlur(0.8))
        edges = grey.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 - min(255, v * 4))
        paper = grey.point(lambda v: 200 + v // 5)
        out = Image.fromarray(np.minimum(np.asarray(edges), np.asarray(paper)).astype(np.uint8))
        return Image.merge("RGB", (out, out, out.point(lambda v: max(0, v - 12))))
    # pop art: posterised, saturated, black outlines
    flat = ImageOps.posterize(img, 2)
    edges = ImageOps.grayscale(img).filter(ImageFilter.FIND_EDGES).point(lambda v: 0 if v > 30 else 255)
    edges = edges.filter(ImageFilter.MinFilter(3))
    return Image.composite(flat, Image.new("RGB", img.size, (0, 0, 0)), edges)


# ------------------------------------------------------------------------------------------------ samples


@dataclass(frozen=True)
class Sample:
    """One rendered portrait and everything the world knows about it."""

    key: str
    identity: Identity
    scene: Scene
    caption: str
    caption_traits: str

    def truth(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "identity": self.identity.index,
            "traits": self.identity.traits(),
            "attributes": self.scene.attributes(),
            "caption": self.caption,
            "caption_traits": self.caption_traits,
        }


def sample(
    identity: Identity, k: int, seed: int = 0, bias: bool = False, planted: str = "beard", **fixed: Any
) -> Sample:
    """The k-th image of an identity (seeded by identity, k and seed; the image does not depend on PLANTED)."""
    r = random.Random(f"scene:{seed}:{identity.index}:{k}")
    scene = random_scene(r, identity, bias=bias, planted=planted, **fixed)
    plain, traits = captions(identity, scene, r)
    return Sample(f"id{identity.index:04d}-{k:03d}", identity, scene, plain, traits)


def morph_key(a: int, b: int, t: float, k: int) -> str:
    """The key of image k of the morph of identities a and b at t (t in whole percent)."""
    return f"mix-id{a:04d}-id{b:04d}-t{round(100 * t):02d}-{k:03d}"


def morph_sample(a: Identity, b: Identity, t: float, k: int, seed: int = 0) -> Sample:
    """The k-th image of the morph of a and b at t (`morph`): a scene like any other, without a hair override or
    a profession (so no planted bias), keyed `morph_key`."""
    key = morph_key(a.index, b.index, t, k)
    r = random.Random(f"scene:{seed}:{key}")
    ident = morph(a, b, t, seed)
    scene = random_scene(r, ident, bias=False, hair_override=None)
    plain, traits = captions(ident, scene, r)
    return Sample(key, ident, scene, plain, traits)
