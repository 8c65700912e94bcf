"""WeCom error codes the sandbox answers with (doc 90455, "全局错误码"), and the exception that
carries one from a handler to the JSON response."""

from __future__ import annotations

ERRMSG: dict[int, str] = {
    -1: "system busy",
    0: "ok",
    40001: "invalid credential",
    40004: "invalid media type",
    40005: "invalid file type",
    40006: "invalid file size",
    40007: "invalid media_id",
    40009: "invalid image size",
    40011: "invalid video size",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40056: "invalid agentid",
    40058: "invalid Request Parameter",
    40068: "invalid tagid",
    40071: "UserTag Name Already Exist",
    40096: "invalid external userid",
    40100: "external userid is already in the transfer process",
    40129: "customer is being transferred",
    40130: "handover and takeover user are the same",
    40131: "handover_userid is not the customer's follow user",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41043: "missing contact way config_id",
    41044: "invalid contact way config_id",
    41049: "welcome_code missing",
    41050: "invalid welcome_code",
    41051: "customer and user has been chatting",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44001: "empty media data",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    47001: "data format error",
    48001: "api unauthorized",
    60111: "userid not found",
    81013: "user & party & tag all invalid",
    84061: "not external contact",
    301002: "access_token and agentid mismatch",
}


def errmsg(code: int, detail: str = "") -> str:
    base = ERRMSG.get(code, "error")
    return f"{base}, hint: [sandbox] {detail}" if detail else base


class ApiError(Exception):
    """A WeCom API error: answered as HTTP 200 with this errcode, as WeCom does."""

    def __init__(self, errcode: int, detail: str = "") -> None:
        super().__init__(f"{errcode} {detail}".strip())
        self.errcode = errcode
        self.detail = detail

    @property
    def errmsg(self) -> str:
        return errmsg(self.errcode, self.detail)


class SandboxError(ValueError):
    """A platform action or control request that cannot happen (unknown advisor, contact way…)."""
