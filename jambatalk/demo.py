"""``jambatalk demo``: speech (synthesised, or the user's) -> the built-in head -> an MP4 with audio."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cli_demo"]


def cli_demo(args) -> int:
    from .api import animate
    from .audio import SAMPLE_RATE
    from .fileio import check_output_path

    out = check_output_path(args.out)
    if out.suffix.lower() != ".mp4":
        from .errors import InputError

        raise InputError(f"the demo writes a video, not '{out.suffix}'", "pass --out NAME.mp4")
    if args.audio:
        audio, source = args.audio, f"'{args.audio}'"
        sample_rate = None
    else:
        from .synth import DEMO_SENTENCE, speak

        text = args.text or DEMO_SENTENCE
        audio, _ = speak(text)
        sample_rate, source = SAMPLE_RATE, f"espeak-ng: \"{text}\""
    anim = animate(audio, sample_rate=sample_rate)
    anim.save(Path(out), size=args.size)
    print(f"wrote {out}: {len(anim)} frames at {anim.fps:g} fps ({anim.duration:.1f} s) from {source}")
    return 0
