"""``jambatalk demo``: speech (synthesised, or the user's) -> the built-in head -> an MP4 with audio."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["cli_demo"]


def cli_demo(args) -> int:
    from .api import animate
    from .audio import SAMPLE_RATE
    from .errors import InputError
    from .fileio import check_not_input, check_output_path
    from .render.renderer import image_size

    out = Path(args.out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"the demo writes a video, and --out '{out}' is not an .mp4 file", "pass --out NAME.mp4")
    image_size(args.size)  # before the speech is made and animated
    check_output_path(out, file=True)
    check_not_input(out, args.audio)
    if args.audio and args.text is not None:
        raise InputError("--audio and --text were both given, but the demo animates one of them",
                         "pass --audio FILE to animate a recording, or --text SENTENCE to synthesise one")
    if args.audio:
        audio, source = args.audio, f"'{args.audio}'"
        sample_rate = None
    else:
        from .synth import DEMO_SENTENCE, speak

        text = DEMO_SENTENCE if args.text is None else args.text
        if not text.strip():
            raise InputError("--text is empty",
                             "pass a sentence to synthesise, or leave --text out for the built-in one")
        audio, _ = speak(text)
        if len(audio) < SAMPLE_RATE // 10:  # punctuation alone ('...', '?') is spoken as a click of a few ms
            raise InputError(f"--text {text!r} synthesised to almost nothing ({len(audio) / SAMPLE_RATE * 1000:.0f} "
                             "ms of sound)", "pass a sentence with words")
        sample_rate, source = SAMPLE_RATE, f"espeak-ng: \"{text}\""
    anim = animate(audio, sample_rate=sample_rate)
    anim.save(Path(out), size=args.size, progress=sys.stderr.isatty())  # no progress bars in logs
    print(f"wrote {out}: {len(anim)} frames at {anim.fps:g} fps ({anim.duration:.1f} s) from {source}")
    return 0
