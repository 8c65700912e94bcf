"""The records the sandbox keeps, shaped after what WeCom's APIs answer about them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONTACT_APP = "contact"
AGENT_APP = "agent"


@dataclass
class App:
    name: str
    secret: str
    agent_id: int | None  # None: the customer-contact secret has no agent


@dataclass
class AccessToken:
    token: str
    app: str
    expires_at: float


@dataclass
class Employee:
    userid: str
    name: str
    department: list[int] = field(default_factory=lambda: [1])
    mobile: str = ""
    position: str = ""
    gender: str = "0"
    email: str = ""
    # Has the customer-contact permission: listed by get_follow_user_list, can own contact ways.
    contact_enabled: bool = True


@dataclass
class Customer:
    external_userid: str
    name: str
    type: int = 1  # 1 WeChat user, 2 WeCom user
    gender: int = 0
    avatar: str = ""
    unionid: str = ""


@dataclass
class Relation:
    userid: str
    external_userid: str
    createtime: int
    state: str = ""
    remark: str = ""
    description: str = ""
    tag_ids: list[str] = field(default_factory=list)
    add_way: int = 1  # 1 scanned a QR code
    oper_userid: str = ""
    # The customer deleted the advisor: WeCom keeps the relation on the advisor's side and the
    # APIs still answer for it (only the advisor deleting the customer ends it, 84061).
    deleted_by_customer: bool = False


@dataclass
class ContactWay:
    config_id: str
    type: int
    scene: int
    state: str
    user: list[str]
    party: list[int]
    remark: str = ""
    skip_verify: bool = True
    qr_code: str = ""
    created_at: int = 0
    adds: int = 0
    style: int = 0  # the mini-program button's style (scene 1)


@dataclass
class WelcomeCode:
    code: str
    userid: str
    external_userid: str
    expires_at: float
    used_at: float | None = None


@dataclass
class Tag:
    id: str
    name: str
    group_id: str
    create_time: int
    order: int = 0
    deleted: bool = False


@dataclass
class TagGroup:
    group_id: str
    group_name: str
    create_time: int
    order: int = 0
    deleted: bool = False
    tags: list[Tag] = field(default_factory=list)


@dataclass
class SentWelcome:
    welcome_code: str
    userid: str
    external_userid: str
    text: str
    attachments: list[Any]
    sent_at: int


@dataclass
class SentAppMessage:
    msgid: str
    agentid: int
    touser: list[str]
    msgtype: str
    content: Any
    sent_at: int


@dataclass
class PendingTransfer:
    handover_userid: str
    takeover_userid: str
    external_userid: str
    transfer_success_msg: str
    requested_at: int


@dataclass
class MassSendResult:
    """One customer of a mass-send task, as get_groupmsg_send_result reports it."""

    external_userid: str
    status: int = 0  # 0 not sent, 1 sent, 2 not a friend (any more), 3 receiving limit reached
    send_time: int = 0


@dataclass
class MassSendTask:
    """One member's part of a mass send: the member confirms it in the WeCom client (or not)."""

    userid: str
    results: list[MassSendResult] = field(default_factory=list)
    state: str = "pending"  # pending | sent | cancelled
    send_time: int = 0


@dataclass
class MassSend:
    """One add_msg_template call (msgid): what was asked, what failed, one task per member."""

    msgid: str
    sender: str
    external_userids: list[str]  # the customers that got a task (fail_list excluded)
    text: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = 0
    fail_list: list[str] = field(default_factory=list)
    tasks: dict[str, MassSendTask] = field(default_factory=dict)
    reminders: list[int] = field(default_factory=list)  # remind_groupmsg_send times
    cancelled_at: int | None = None


@dataclass
class Media:
    """Temporary media (media/upload): valid for 3 days after ``created_at`` (the sandbox clock)."""

    media_id: str
    type: str  # image | voice | video | file
    filename: str
    size: int
    sha256: str
    created_at: int
