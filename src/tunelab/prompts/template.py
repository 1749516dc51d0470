"""Prompt templates: user-written Jinja strings rendered in a sandbox, plus the fixed prompt layout.

Prompts are data (lm-evaluation-harness style): a template is a Jinja string over an example's
fields, e.g. ``"Review: {{ text }}\\nSentiment:"``. Templates come from experiment files, so they
are rendered in Jinja's *immutable sandbox* (no attribute access to dunders, no mutation) with
``StrictUndefined`` (a misspelled field is an error, never an empty string).

Layout of a prompt (`build_prompt`), parts in this fixed order, empty ones skipped::

    persona            \\
    instruction         |
    context             |  the "parts": inserted verbatim, one per line
    constraints         |  (a list of constraints becomes "- item" lines)
    output_format       |
    tone                |
    dynamic_context    /   earlier turns, one per line
    <separator>
    demonstration 1    <- demonstration_template over (template(demo), answer)
    <separator> ...
    demonstration k
    <separator>
    query              <- template(example)
    [CoT cue] [self-check instruction]   appended to the query, space-separated

``<separator>`` is ``demonstration_separator`` (default a blank line).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from pydantic import field_validator

from tunelab.data.loaders import SOURCE_KEY
from tunelab.errors import ConfigError
from tunelab.prompts.chat import apply_chat_template, apply_chat_template_parts, has_chat_template  # noqa: F401 (re-export)
from tunelab.settings import StrictSettings

DEFAULT_COT_CUE = "Let's think step by step."
DEFAULT_SELF_CHECK = "Check the reasoning for mistakes before giving the final answer."
DEFAULT_DEMONSTRATION_TEMPLATE = "{{ prompt }} {{ answer }}"
PART_ORDER = ("persona", "instruction", "context", "constraints", "output_format", "tone", "dynamic_context")

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class PromptSettings(StrictSettings):
    """The `prompt:` section of an experiment: template, optional prompt parts, verbalizer."""

    template: str | None = None
    """Jinja string over the example's fields, e.g. `"Review: {{ text }}\\nSentiment:"`. Default: the text field(s)."""
    verbalizer: dict[str | int, str | list[str]] | None = None
    """Label -> word or words read out by the LM, e.g. `{negative: terrible, positive: [great, good]}`."""
    instruction: str | None = None
    """Task instruction placed before the demonstrations (verbatim)."""
    context: str | None = None
    """Background text shared by every example (verbatim)."""
    persona: str | None = None
    """Who the model should be, e.g. "You are a careful film critic." (first line of the prompt)."""
    output_format: str | None = None
    """How the answer should look, e.g. "Answer with one word." (verbatim)."""
    tone: str | None = None
    """Style of the answer, written as a sentence, e.g. "Answer in a neutral tone."."""
    constraints: str | list[str] | None = None
    """One constraint or a list of them (rendered as "- item" lines)."""
    dynamic_context: list[str] | None = None
    """Earlier turns of a conversation, oldest first, one per line before the demonstrations."""
    chain_of_thought: bool | str = False
    """Append a reasoning cue to the query: true -> "Let's think step by step.", or your own cue."""
    self_check: bool | str = False
    """Append a self-verification instruction after the query (true -> a default sentence)."""
    demonstration_template: str = DEFAULT_DEMONSTRATION_TEMPLATE
    """How one exemplar is rendered; variables: `prompt` (template over the exemplar), `answer`, its fields."""
    demonstration_separator: str = "\n\n"
    """Between the parts block, each demonstration and the query."""
    use_chat_template: Literal["auto", True, False] = "auto"
    """`auto`: wrap the prompt in the tokenizer's chat template when it has one (instruct models)."""

    @field_validator("template", "demonstration_template")
    @classmethod
    def _compiles(cls, source: str | None, info) -> str | None:
        if source is not None:
            try:
                compile_template(source, info.field_name)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return source

    @field_validator("dynamic_context", mode="before")
    @classmethod
    def _one_turn_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def check_fields(self, fields: Iterable[str], example: Mapping[str, Any] | None = None) -> None:
        """Fail early (before any model work) when a template uses a field the data lacks, or (given one
        example) fails to render on it: `{{ text + 1 }}` is valid Jinja that only rendering refutes."""
        fields = set(fields)
        validate_fields(resolve_template(self, fields), fields, key="prompt.template")
        validate_fields(self.demonstration_template, fields | {"prompt", "answer"}, key="prompt.demonstration_template")
        if example is not None:
            answer = example.get("label", example.get("target", ""))
            render_demonstration(self, example, "" if answer is None else str(answer))  # renders the template too


def _syntax_error(err: jinja2.TemplateSyntaxError, key: str, source: str) -> ConfigError:
    return ConfigError(f"{key}: Jinja syntax error on line {err.lineno}: {err.message} (template: {source!r})")


@functools.lru_cache(maxsize=256)
def compile_template(source: str, key: str = "template") -> jinja2.Template:
    """Compile a user template in the sandbox; a syntax error becomes a ConfigError with its line."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(err, key, source) from None


def template_fields(source: str, key: str = "template") -> set[str]:
    """The example fields a template reads (undeclared variables minus Jinja's globals such as `range`)."""
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source))) - set(_ENV.globals)
    except jinja2.TemplateSyntaxError as err:
        raise _syntax_error(err, key, source) from None


def validate_fields(template: str, available_fields: Iterable[str], *, key: str = "template") -> set[str]:
    """Check that every variable `template` uses is a field of the data; returns the used fields."""
    available = set(available_fields)
    used = template_fields(template, key)
    missing = sorted(used - available)
    if missing:
        raise ConfigError(
            f"{key} uses field {missing[0]!r}" + (f" (and {missing[1:]})" if len(missing) > 1 else "")
            + f", which the data does not have; available fields: {sorted(available)}"
        )
    return used


def render(source: str, variables: Mapping[str, Any], *, key: str = "template") -> str:
    """Render a user template in the sandbox. Any failure is the template's (or the example's), so it
    becomes a ConfigError naming `key`, the template line, the example's source line and a fix."""
    try:
        return compile_template(source, key).render(**variables)
    except Exception as err:  # user code: TypeError, OverflowError, SecurityError, UndefinedError, ...
        raise render_error(err, source, variables, key) from None


def render_error(err: Exception, source: str, variables: Mapping[str, Any], key: str) -> ConfigError:
    where = key + template_line(err, source) + (f" on the example at {variables[SOURCE_KEY]}" if SOURCE_KEY in variables else "")
    fields = sorted(k for k in variables if not str(k).startswith("_"))
    if isinstance(err, jinja2.UndefinedError):
        return ConfigError(f"{where}: {err}; available fields: {fields}")
    if isinstance(err, SecurityError):
        return ConfigError(f"{where}: the template tried an unsafe operation, blocked by the sandbox: {said(err)}; "
                           f"remove it (templates may read fields and use filters, not call methods or change values)")
    if isinstance(err, OverflowError):
        return ConfigError(f"{where}: the sandbox refused the template: {said(err)}; use smaller ranges and loops")
    return ConfigError(f"{where}: the template failed while rendering ({type(err).__name__}: {said(err)}); fix the expression, "
                       f"e.g. convert a field before arithmetic ({{{{ text|length + 1 }}}}, {{{{ score|float * 2 }}}}) "
                       f"or join text with ~ ({{{{ text ~ '!' }}}}); fields: {fields}")


def said(err: Exception) -> str:
    """The exception's text without its final period (it goes mid-sentence)."""
    return str(err).strip().rstrip(".")


def template_line(err: Exception, source: str) -> str:
    """' (template line N)' for a multi-line template: the last traceback frame Jinja mapped to the template."""
    if "\n" not in source.strip():
        return ""
    line, tb = None, err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (template line {line})" if line else ""


def resolve_template(settings: PromptSettings, fields: Iterable[str]) -> str:
    """The template to use: the user's, else the text field (and ``text_pair`` on a new line)."""
    if settings.template is not None:
        return settings.template
    fields = set(fields)
    if "text" not in fields:
        raise ConfigError(f"prompt.template is not set and the data has no 'text' field; available fields: {sorted(fields)}")
    return "{{ text }}\n{{ text_pair }}" if "text_pair" in fields else "{{ text }}"


def render_query(settings: PromptSettings, example: Mapping[str, Any]) -> str:
    """The template rendered on one example (no parts, demonstrations or cues)."""
    return render(resolve_template(settings, example), example, key="prompt.template")


def render_demonstration(settings: PromptSettings, example: Mapping[str, Any], answer: str) -> str:
    """One exemplar: `demonstration_template` over the rendered template and the (stripped) answer."""
    variables = {**example, "prompt": render_query(settings, example), "answer": str(answer).strip()}
    return render(settings.demonstration_template, variables, key="prompt.demonstration_template")


def render_parts(settings: PromptSettings) -> str:
    """The example-independent parts, in `PART_ORDER`, one per line; '' when none is set."""
    lines: list[str] = []
    for name in PART_ORDER:
        value = getattr(settings, name)
        if not value:
            continue
        if name == "constraints" and not isinstance(value, str):
            lines.extend(f"- {item}" for item in value if item)
        elif name == "dynamic_context":
            lines.extend(turn for turn in value if turn)
        else:
            lines.append(value)
    return "\n".join(lines)


def join_words(*pieces: str) -> str:
    """Join with one space, none where a piece already ends (or the next starts) with whitespace."""
    out = ""
    for piece in pieces:
        if not piece:
            continue
        out += piece if not out or out[-1].isspace() or piece[0].isspace() else " " + piece
    return out


def _cues(settings: PromptSettings) -> list[str]:
    cot = DEFAULT_COT_CUE if settings.chain_of_thought is True else settings.chain_of_thought or ""
    check = DEFAULT_SELF_CHECK if settings.self_check is True else settings.self_check or ""
    return [cot, check]


def build_prompt_parts(
    settings: PromptSettings,
    example: Mapping[str, Any],
    demonstrations: Sequence[tuple[Mapping[str, Any], str]] = (),
    *,
    demonstrations_fixed: bool = True,
) -> tuple[str, str]:
    """Split a prompt into (shared_prefix, query) with ``shared_prefix + query == build_prompt(...)``.

    The shared prefix is identical for every test example (parts, and the demonstrations when the
    same ones are used for every example: pass ``demonstrations_fixed=False`` when they are chosen
    per example, e.g. nearest neighbours), so the scoring engine can cache its key/values. It ends
    with the separator, so the query starts a fresh block.
    """
    sep = settings.demonstration_separator
    blocks = [render_demonstration(settings, ex, answer) for ex, answer in demonstrations]
    query = join_words(render_query(settings, example), *_cues(settings))
    parts = render_parts(settings)
    shared = [parts] if parts else []
    if demonstrations_fixed:
        shared, per_example = shared + blocks, [query]
    else:
        per_example = blocks + [query]
    prefix = sep.join(shared) + sep if shared else ""
    return prefix, sep.join(per_example)


def build_prompt(
    settings: PromptSettings,
    example: Mapping[str, Any],
    demonstrations: Sequence[tuple[Mapping[str, Any], str]] = (),
) -> str:
    """The full prompt text for one example (layout in the module docstring)."""
    prefix, query = build_prompt_parts(settings, example, demonstrations)
    return prefix + query
