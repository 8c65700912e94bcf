"""The SOP card (SOP 卡片) model: what one YAML file in ``sop_cards/`` holds, validated.

A card says who it is for (``audience``), what enrolls a customer (``trigger``), its timed
``steps`` (each: a reminder to the advisor, quick replies, preset Q&A, optional actions) and when
an enrollment ends early (``exit``). The format is documented, with its JSON Schema, in
``sop_cards/README.md``; ``scrm sop schema`` prints the schema from these models.

Structure and field values are checked here; checks that need the whole file or other files
(step order, duplicate ids, tags unknown to the corp tag library, step times against working
hours) are in ``app/sop/loader.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from app.sop import schedule, tagexpr

STAGES = ("prospect", "intent", "lost", "owner")  # 潜客 意向 战败 车主 (app/intake/profile.py)
BANDS = ("low", "medium", "high")  # lead intent bands (线索浓度)
TRIGGERS = (
    "contact_added",
    "tag_added",
    "stage_changed",
    "intent_band",
    "lead_assigned",
    "no_reply",
    "manual",
)

# Placeholders texts may use; filled per customer when a reply is offered or a step runs.
PLACEHOLDERS = {
    "customer": "客户称呼 (the customer's name or remark)",
    "advisor": "顾问姓名 (the advisor's name)",
    "dealer": "门店名称 (the dealer's name)",
    "model": "意向车型 (the customer's model of interest)",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

# WeCom's limits (bytes of UTF-8) on what add_msg_template / sendChatMessage carry.
TEXT_MAX_BYTES = 4000
LINK_TITLE_MAX_BYTES = 128
LINK_DESC_MAX_BYTES = 512
MINIPROGRAM_TITLE_MAX_BYTES = 64
ATTACHMENTS_MAX = 9

Stage = Literal["prospect", "intent", "lost", "owner"]
Band = Literal["low", "medium", "high"]


# -- field types -----------------------------------------------------------------------------------


def check_placeholders(text: str) -> str:
    """ValueError when ``text`` uses a placeholder outside PLACEHOLDERS or has a lone brace."""
    for match in _PLACEHOLDER.finditer(text):
        if match.group(1) not in PLACEHOLDERS:
            known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {match.group(0)}: use {known}")
    rest = _PLACEHOLDER.sub("", text)
    if "{" in rest or "}" in rest:
        raise ValueError("a { or } without its pair: placeholders are written {customer}")
    return text


def render(text: str, values: Mapping[str, str]) -> str:
    """Fill the placeholders (missing values become empty text)."""
    return _PLACEHOLDER.sub(
        lambda m: str(values.get(m.group(1), "")) if m.group(1) in PLACEHOLDERS else m.group(0), text
    )


def _max_bytes(limit: int, text: str) -> str:
    size = len(text.encode())
    if size > limit:
        raise ValueError(f"is {size} bytes of UTF-8; WeCom allows at most {limit}")
    return text


def _text_type(limit: int = TEXT_MAX_BYTES) -> Any:
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1),
        AfterValidator(partial(_max_bytes, limit)),
        AfterValidator(check_placeholders),
    ]


Text = _text_type()
LinkTitle = _text_type(LINK_TITLE_MAX_BYTES)
LinkDesc = _text_type(LINK_DESC_MAX_BYTES)
MiniProgramTitle = _text_type(MINIPROGRAM_TITLE_MAX_BYTES)
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Code = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


def _url(text: str) -> str:
    if not re.fullmatch(r"https?://[^\s/]+\S*", text):
        raise ValueError(f"{text!r} is not a web address: write http:// or https://…")
    return check_placeholders(text)


Url = Annotated[
    str,
    StringConstraints(strip_whitespace=True),
    AfterValidator(_url),
    WithJsonSchema({"type": "string", "pattern": r"^https?://\S+$"}),
]


def _tag(text: str) -> str:
    return tagexpr.normalize_tag(text)


TagName = Annotated[
    str,
    AfterValidator(_tag),
    WithJsonSchema({"type": "string", "pattern": "^[^:：]+[:：][^:：]+$", "examples": ["意向车型:RAV4"]}),
]


def _appid(text: str) -> str:
    if not re.fullmatch(r"wx[0-9a-f]{16}", text):
        raise ValueError(f"{text!r} is not a mini-program appid (wx and 16 hex digits)")
    return text


def _page(text: str) -> str:
    path = text.split("?", 1)[0]
    if not path.endswith(".html"):
        raise ValueError(f"{text!r}: WeCom wants the mini-program page path to end in .html")
    return check_placeholders(text)


def _at(text: Any) -> str:
    return str(schedule.parse_offset(text))


At = Annotated[
    str,
    AfterValidator(_at),
    WithJsonSchema(
        {"type": "string", "pattern": schedule.AT_PATTERN, "examples": ["day 0", "+1d 10:00", "+3d", "+2h"]}
    ),
]


def _expression(text: str | None) -> str | None:
    if text is None:
        return None
    tagexpr.parse(text)  # TagExprError is a ValueError: its message names the column
    return text.strip()


SLUG = r"^[a-z0-9]+(-[a-z0-9]+)*$"


def _slug(text: str) -> str:
    if not re.fullmatch(SLUG, text) or len(text) > 64:
        raise ValueError(
            f"{text!r}: ids are lowercase letters, digits and single dashes (at most 64), "
            "e.g. lost-lead-recall"
        )
    return text


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- quick replies (快捷回复 / 话术) ------------------------------------------------------------------


class TextReply(_Model):
    """A text the advisor sends with one tap."""

    type: Literal["text"]
    text: Text


class ImageReply(_Model):
    """An image: a public ``url`` or an uploaded ``media_id`` (media ids expire after 3 days)."""

    type: Literal["image"]
    url: Url | None = None
    media_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None
    title: NonEmpty | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImageReply:
        if (self.url is None) == (self.media_id is None):
            raise ValueError("give exactly one of url or media_id")
        return self


class LinkReply(_Model):
    """A link card (图文链接)."""

    type: Literal["link"]
    title: LinkTitle
    url: Url
    desc: LinkDesc | None = None
    picurl: Url | None = None


class MiniProgramReply(_Model):
    """A mini-program card (小程序). ``picurl`` is its cover: a jpg or png of at most 10 MB
    (520x416 recommended), uploaded as WeCom media when a send action carries the card."""

    type: Literal["miniprogram"]
    title: MiniProgramTitle
    appid: Annotated[str, AfterValidator(_appid)]
    page: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1), AfterValidator(_page)]
    picurl: Url


QuickReply = Annotated[TextReply | ImageReply | LinkReply | MiniProgramReply, Field(discriminator="type")]
Attachment = Annotated[ImageReply | LinkReply | MiniProgramReply, Field(discriminator="type")]


class QA(_Model):
    """Preset Q&A: when the customer's question holds one of the ``keywords``, offer ``answer``."""

    keywords: Annotated[list[NonEmpty], Field(min_length=1)]
    answer: Text


# -- actions ----------------------------------------------------------------------------------------


class TagAction(_Model):
    """Tag the customer (corp tags, ``组名:标签名``)."""

    type: Literal["tag"]
    add: list[TagName] = []
    remove: list[TagName] = []

    @model_validator(mode="after")
    def _something(self) -> TagAction:
        if not self.add and not self.remove:
            raise ValueError("give tags to add or remove")
        return self


class StageAction(_Model):
    """Move the customer to another lifecycle stage."""

    type: Literal["stage"]
    to: Stage


class SendAction(_Model):
    """Prepare a message through add_msg_template with the advisor as sender (the advisor
    confirms it in WeCom before it goes out)."""

    type: Literal["send"]
    text: Text
    # A mini-program's cover goes up as WeCom media when the step runs (app/wecom/media.py);
    # quick replies keep the address (the sidebar's JS-SDK takes it as imgUrl).
    attachments: Annotated[list[Attachment], Field(max_length=ATTACHMENTS_MAX)] = []


Action = Annotated[TagAction | StageAction | SendAction, Field(discriminator="type")]


# -- triggers -------------------------------------------------------------------------------------


class ContactAdded(_Model):
    """The customer added an advisor (add_external_contact)."""

    on: Literal["contact_added"]


class TagAdded(_Model):
    """The customer got the corp tag ``tag``."""

    on: Literal["tag_added"]
    tag: TagName


class StageChanged(_Model):
    """The customer's lifecycle stage changed to ``stage``."""

    on: Literal["stage_changed"]
    stage: Stage


class IntentBandCrossed(_Model):
    """The customer's intent score crossed into ``band``."""

    on: Literal["intent_band"]
    band: Band


class LeadAssigned(_Model):
    """An imported lead was assigned to an advisor."""

    on: Literal["lead_assigned"]


class NoReply(_Model):
    """The customer has not replied for ``days`` days."""

    on: Literal["no_reply"]
    days: Annotated[int, Field(ge=1, le=90)]


class Manual(_Model):
    """An advisor or HQ enrolls the customer by hand."""

    on: Literal["manual"]


Trigger = Annotated[
    ContactAdded | TagAdded | StageChanged | IntentBandCrossed | LeadAssigned | NoReply | Manual,
    Field(discriminator="on"),
]


# -- the card ---------------------------------------------------------------------------------------


class Audience(_Model):
    """Who the card is for. Every part is optional; an empty part allows everyone; all given
    parts must hold."""

    tags: Annotated[str, AfterValidator(_expression)] | None = Field(
        default=None, description="A tag expression, e.g. `意向车型:RAV4 and not 客户阶段:车主`."
    )
    stages: list[Stage] = []
    intent_bands: list[Band] = []
    models: list[Code] = []
    dealers: list[Code] = []
    regions: list[NonEmpty] = []

    _expr: tagexpr.TagExpr | None = PrivateAttr(default=None)

    def model_post_init(self, context: Any, /) -> None:
        self._expr = tagexpr.parse(self.tags) if self.tags else None

    @property
    def expression(self) -> tagexpr.TagExpr | None:
        return self._expr

    def matches(
        self,
        tags: Iterable[str] = (),
        *,
        stage: str | None = None,
        band: str | None = None,
        model: str | None = None,
        dealer: str | None = None,
        region: str | None = None,
    ) -> bool:
        """Whether a customer with these corp tags (``组名:标签名``) and profile is in the audience."""
        checks = (
            (self.stages, stage),
            (self.intent_bands, band),
            (self.models, model),
            (self.dealers, dealer),
            (self.regions, region),
        )
        if any(allowed and value not in allowed for allowed, value in checks):
            return False
        return self._expr is None or self._expr.matches(set(tags))


class Step(_Model):
    """One timed step: when (``at``), what to remind the advisor of, what to offer and do."""

    at: At
    reminder: Text
    quick_replies: list[QuickReply] = []
    qa: list[QA] = []
    actions: list[Action] = []

    @property
    def offset(self) -> schedule.StepOffset:
        return schedule.parse_offset(self.at)


class Exit(_Model):
    """When an enrollment ends before its last step."""

    on_stage_change: bool = True
    on_customer_left: bool = True


class Card(_Model):
    """One SOP card (one YAML file)."""

    id: Annotated[
        str, AfterValidator(_slug), WithJsonSchema({"type": "string", "pattern": SLUG, "maxLength": 64})
    ]
    title: NonEmpty
    version_notes: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""
    audience: Audience = Audience()
    trigger: Trigger
    steps: Annotated[list[Step], Field(min_length=1, max_length=30)]
    exit: Exit = Exit()

    def tags_used(self) -> list[str]:
        """Every corp tag the card names (audience expression, trigger, tag actions)."""
        names: list[str] = []
        if self.audience.expression is not None:
            names.extend(tag.tag for tag in self.audience.expression.tags())
        if isinstance(self.trigger, TagAdded):
            names.append(self.trigger.tag)
        for step in self.steps:
            for action in step.actions:
                if isinstance(action, TagAction):
                    names.extend(action.add + action.remove)
        return names


SCHEMA_BEGIN = "<!-- sop-card-schema:begin (generated by `scrm sop schema --readme FILE`: do not edit) -->"
SCHEMA_END = "<!-- sop-card-schema:end -->"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a card file (what ``scrm sop schema`` prints)."""
    schema = Card.model_json_schema()
    schema.pop("title", None)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "SOP card", **schema}


def schema_text() -> str:
    return json.dumps(json_schema(), ensure_ascii=False, indent=2) + "\n"


def schema_block(markdown: str) -> str | None:
    """The schema embedded in a README between the markers (None if the markers are missing)."""
    start, end = markdown.find(SCHEMA_BEGIN), markdown.find(SCHEMA_END)
    if start < 0 or end < start:
        return None
    inner = markdown[start + len(SCHEMA_BEGIN) : end].strip()
    fence = "```json"
    if inner.startswith(fence) and inner.endswith("```"):
        inner = inner[len(fence) : -3]
    return inner.strip() + "\n"


def with_schema(markdown: str) -> str:
    """``markdown`` with the block between the markers replaced by the current schema."""
    start, end = markdown.find(SCHEMA_BEGIN), markdown.find(SCHEMA_END)
    if start < 0 or end < start:
        raise ValueError(f"the markers {SCHEMA_BEGIN} and {SCHEMA_END} are missing")
    block = f"{SCHEMA_BEGIN}\n```json\n{schema_text()}```\n"
    return markdown[:start] + block + markdown[end:]
