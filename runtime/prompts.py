"""The zero-shot prompt: one template string, and the one rule for putting a label into it.

Pure Python (no numpy), so the CLI can take its `--template` defaults from here without paying for numpy at import.
"""

from __future__ import annotations

from clipedge.runtime.errors import InputError

__all__ = ["DEFAULT_TEMPLATE", "fill_template"]

DEFAULT_TEMPLATE = "a photo of a {}."  # OpenAI's most common zero-shot prompt (CLIP notebooks, ImageNet prompts)


def fill_template(template: str, label: str) -> str:
    """`replace`, not `str.format`: a template may hold other braces (or a label may), and only `{}` is the slot.
    A template without the slot would give every label the same prompt, so it is refused."""
    if "{}" not in template:
        raise InputError(f"template {template!r} has no '{{}}' where the label goes")
    return template.replace("{}", label)
