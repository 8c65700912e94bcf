"""Welcome messages (欢迎语), sent with the add's WelcomeCode: personal to the advisor the
customer ends up with and to the model they came for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WelcomeContext:
    receiver_name: str | None  # the advisor the customer added
    keeper_name: str | None  # the advisor who keeps the customer (differs after a hand-over)
    dealer_name: str | None
    model: str | None
    handed_over: bool


def text(ctx: WelcomeContext) -> str:
    where = f"{ctx.dealer_name}" if ctx.dealer_name else "我们"
    topic = f"{ctx.model}的价格、配置和试驾预约" if ctx.model else "选车、试驾和用车的问题"
    if ctx.handed_over and ctx.keeper_name:
        speciality = f"{ctx.model}专属顾问" if ctx.model else "专属顾问"
        return (
            f"您好，欢迎来到{where}！已为您安排{speciality}{ctx.keeper_name}，"
            f"TA会尽快与您联系，{topic}都可以问TA。"
        )
    advisor = f"销售顾问{ctx.receiver_name}" if ctx.receiver_name else "销售顾问"
    return f"您好，我是{where}的{advisor}，很高兴为您服务！{topic}，随时问我～"
