"""A tiny catalogue of one's own, written by `recsys init PATH --example` (and used by the docs' test).

Why generate instead of ship: the photos are the public-domain pictures inside scikit-image and
the sounds are synthesised with numpy, so the example costs the repository nothing and exercises
every medium: 30 items (photo + text, audio + text, photo only, audio only), four themes, 50
users who each prefer one theme, 500 timestamped interactions. It is the layout that
`docs/your-data.md` describes: `items.csv` (text/title columns, media paths relative to the
folder), `interactions.csv`, `dataset.toml` and `media/`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

SAMPLE_RATE = 22050

# (item_id, theme, title, text, photo in scikit-image or None, sound recipe or None)
ITEMS: tuple[tuple[str, str, str, str | None, str | None, str | None], ...] = (
    ("cat-portrait", "animals", "Cat portrait", "A ginger cat looks straight at the camera with green eyes.", "cat", None),
    ("chelsea", "animals", "Chelsea the cat", "Close-up of a tabby cat with whiskers, resting indoors.", "chelsea", None),
    ("horse", "animals", "Horse silhouette", "The outline of a horse standing on a field.", "horse", None),
    ("astronaut", "space", "Astronaut portrait", "An astronaut in a white spacesuit in front of the flag.", "astronaut", None),
    ("deep-field", "space", "Hubble deep field", "Thousands of distant galaxies seen by the Hubble telescope.",
     "hubble_deep_field", None),
    ("moon", "space", "The Moon", "The surface of the Moon with craters and dark seas.", "moon", None),
    ("rocket", "space", "Rocket launch", "A rocket lifts off its launch pad into a clear sky.", "rocket", None),
    ("camera", "objects", "Photographer", "A photographer with a camera on a tripod in a park.", "camera", None),
    ("clock", "objects", "Wall clock", "A round wall clock with black hands and numbers.", "clock", None),
    ("coins", "objects", "Old coins", "A collection of old coins laid out on a dark table.", "coins", None),
    ("coffee", "objects", "Cup of coffee", "A cup of black coffee on a saucer, seen from above.", "coffee", None),
    ("motorbike", "objects", "Motorbike", "A red motorbike parked in a workshop.", "stereo_motorcycle", None),
    ("purring", "animals", "Purring", "The low steady purr of a content cat.", None, "purr"),
    ("birdsong", "animals", "Birdsong", "Short high chirps of a small bird at dawn.", None, "chirps"),
    ("gallop", "animals", "Gallop", "The rhythm of hooves of a galloping horse.", None, "hooves"),
    ("launch-rumble", "space", "Launch rumble", "The deep rumble of a rocket engine at lift-off.", None, "rumble"),
    ("radio-beacon", "space", "Radio beacon", "A pulsing radio signal from a satellite in orbit.", None, "beacon"),
    ("ticking", "objects", "Ticking clock", "The regular tick of a mechanical clock.", None, "ticks"),
    ("shutter", "objects", "Camera shutter", "Clicks of a camera shutter taking a burst of photos.", None, "clicks"),
    ("engine-idle", "objects", "Engine idle", "A motorbike engine idling in a garage.", None, "idle"),
    ("rain", "nature", "Rain", "Steady rain falling on leaves.", None, "rain"),
    ("wind", "nature", "Wind", "Wind blowing through tall grass.", None, "wind"),
    ("brick-wall", "nature", None, None, "brick", None),
    ("grass", "nature", None, None, "grass", None),
    ("gravel", "nature", None, None, "gravel", None),
    ("colour-wheel", "objects", None, None, "colorwheel", None),
    ("stream", "nature", None, None, None, "stream"),
    ("thunder", "nature", None, None, None, "thunder"),
    ("hum", "space", None, None, None, "hum"),
    ("meow", "animals", None, None, None, "meow"),
)
THEMES = ("animals", "space", "objects", "nature")


def _sound(recipe: str, rng: np.random.Generator, seconds: float = 2.0) -> np.ndarray:
    """A short clip whose character matches its title (pitch, rhythm, noise colour)."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    noise = rng.standard_normal(t.size)
    pulses = lambda rate, width: (np.mod(t * rate, 1.0) < width).astype(float)  # noqa: E731
    waves = {
        "purr": np.sin(2 * np.pi * 25 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) * noise * 0.5,
        "chirps": np.sin(2 * np.pi * (3000 + 1500 * np.mod(t * 6, 1.0)) * t) * pulses(6, 0.3),
        "hooves": np.convolve(noise * pulses(3.5, 0.03), np.ones(60) / 60, mode="same") * 4,
        "rumble": np.convolve(noise, np.ones(400) / 400, mode="same") * 8,
        "beacon": np.sin(2 * np.pi * 1200 * t) * pulses(2, 0.2),
        "ticks": noise * pulses(2, 0.01),
        "clicks": noise * pulses(8, 0.02),
        "idle": np.sin(2 * np.pi * 40 * t) * 0.5 + 0.3 * np.sin(2 * np.pi * 80 * t) * pulses(12, 0.5),
        "rain": noise * 0.3,
        "wind": np.convolve(noise, np.ones(40) / 40, mode="same") * (1 + np.sin(2 * np.pi * 0.5 * t)) * 2,
        "stream": np.convolve(noise, np.ones(8) / 8, mode="same") * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)),
        "thunder": np.convolve(noise, np.ones(800) / 800, mode="same") * 20 * np.exp(-t),
        "hum": np.sin(2 * np.pi * 60 * t) + 0.5 * np.sin(2 * np.pi * 120 * t),
        "meow": np.sin(2 * np.pi * (500 + 300 * np.sin(np.pi * t / seconds)) * t) * np.sin(np.pi * t / seconds),
    }
    wave = waves[recipe]
    return (0.5 * wave / max(float(np.abs(wave).max()), 1e-6)).astype(np.float32)


def _write_media(folder: Path, rng: np.random.Generator) -> dict[str, tuple[str | None, str | None]]:
    import soundfile as sf
    from PIL import Image
    from skimage import data

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    paths: dict[str, tuple[str | None, str | None]] = {}
    for item_id, _, _, _, photo, sound in ITEMS:
        image_uri = audio_uri = None
        if photo:
            picture = getattr(data, photo)()
            picture = picture[0] if isinstance(picture, tuple) else picture  # stereo pairs: the left view
            if picture.dtype != np.uint8:  # boolean masks (horse), float images
                picture = picture.astype(np.float32)
                picture = (255 * (picture - picture.min()) / max(float(np.ptp(picture)), 1e-6)).astype(np.uint8)
            image = Image.fromarray(picture).convert("RGB")
            image.thumbnail((320, 320))
            image.save(media / f"{item_id}.jpg", quality=90)
            image_uri = f"media/{item_id}.jpg"
        if sound:
            sf.write(media / f"{item_id}.wav", _sound(sound, rng), SAMPLE_RATE)
            audio_uri = f"media/{item_id}.wav"
        paths[item_id] = (image_uri, audio_uri)
    return paths


def _interactions(rng: np.random.Generator, n_users: int = 50, per_user: int = 10) -> pl.DataFrame:
    """Each user mostly picks items of one favourite theme (80 %), in time order."""
    by_theme = {theme: [i for i, th, *_ in ITEMS if th == theme] for theme in THEMES}
    all_items = [item[0] for item in ITEMS]
    rows = []
    start = 1_700_000_000
    for u in range(n_users):
        theme = THEMES[u % len(THEMES)]
        for k in range(per_user):
            pool = by_theme[theme] if rng.random() < 0.8 else all_items
            rows.append((f"user-{u:02d}", str(rng.choice(pool)), start + u * 3600 + k * 60))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


DATASET_TOML = """# Column mapping: canonical name = the name in your files (delete lines you do not need).
[columns]
user_id = "user_id"
item_id = "item_id"
timestamp = "timestamp"
"""


def write_example_catalogue(folder: Path, seed: int = 0) -> Path:
    """Write the 30-item example catalogue into `folder` (created; must be empty or absent)."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; choose a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    try:
        paths = _write_media(folder, rng)
    except Exception:  # never leave half a catalogue behind
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    items = pl.DataFrame(
        [(item_id, title, text, *paths[item_id]) for item_id, _, title, text, _, _ in ITEMS],
        schema=["item_id", "title", "text", "image_uri", "audio_uri"], orient="row")
    items.write_csv(folder / "items.csv")
    _interactions(rng).write_csv(folder / "interactions.csv")
    (folder / "dataset.toml").write_text(DATASET_TOML)
    return folder


def write_skeleton(folder: Path) -> Path:
    """An empty catalogue to fill in: headers, one example row each, the mapping file, `media/`."""
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; choose a new folder")
    (folder / "media").mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text("item_id,title,text,image_uri,audio_uri\n"
                                      "sku-1,Red mug,A red ceramic mug for coffee.,media/sku-1.jpg,\n")
    (folder / "interactions.csv").write_text("user_id,item_id,timestamp\nalice,sku-1,1700000000\n")
    (folder / "dataset.toml").write_text(DATASET_TOML)
    return folder
