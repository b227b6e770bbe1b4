"""Helpers for the trainer tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def add_odd_images(folder: Path, size: int = 48) -> dict[str, str]:
    """Readable images in unusual modes plus two unreadable files. Returns name -> kind."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), 128).save(folder / "gray.png")
    Image.new("CMYK", (size, size), (10, 200, 30, 0)).save(folder / "cmyk.jpg")
    Image.new("RGBA", (size, size), (255, 0, 0, 100)).save(folder / "rgba.png")
    Image.new("P", (size, size), 3).save(folder / "palette.gif")
    Image.new("I;16", (size, size), 300).save(folder / "gray16.png")
    good = folder / "whole.jpg"
    Image.effect_noise((size, size), 40).convert("RGB").save(good, quality=95)
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    good.unlink()
    (folder / "notes.jpg").write_text("this is a text file with an image extension\n")
    return {"gray.png": "ok", "cmyk.jpg": "ok", "rgba.png": "ok", "palette.gif": "ok", "gray16.png": "ok",
            "truncated.jpg": "unreadable", "notes.jpg": "unreadable"}
