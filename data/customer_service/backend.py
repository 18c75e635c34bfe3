"""The simulated Acme backend of datagen.py's conversations.

What each of the agent's tools returns for a call (``tool_result``), and the
assistant's one-sentence report of a successful result (``final_text``).
Results draw their values from the split's pools, so eval conversations see
results built from eval values only.
"""

from __future__ import annotations

import datetime as _dt
import random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pools import Pools

TODAY = _dt.date(2025, 6, 1)  # the day conversations take place: results' dates, and the dates users ask for, count from it


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _amount_value(cents: int) -> float | int:
    return cents // 100 if cents % 100 == 0 else round(cents / 100, 2)


CARRIERS = ["UPS", "FedEx", "USPS", "DHL"]
STATUS_TEXT = {"processing": "still processing", "shipped": "shipped", "delivered": "delivered",
               "cancelled": "cancelled"}


def _past_date(rng: random.Random, days: int = 60) -> str:
    return (TODAY - _dt.timedelta(days=rng.randrange(1, days))).isoformat()


def _future_date(rng: random.Random, days: int = 10) -> str:
    return (TODAY + _dt.timedelta(days=rng.randrange(1, days))).isoformat()


def _track_no(rng: random.Random) -> str:
    return "1Z" + "".join(rng.choice("0123456789ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(16))


def tool_result(tool: str, args: dict, pools: Pools, rng: random.Random, ctx: dict) -> dict:
    """A plausible successful result for a call.  ``ctx`` can force fields."""
    if tool == "check_order_status":
        status = ctx.get("status") or rng.choice(["processing", "shipped", "shipped", "delivered", "delivered"])
        res: dict[str, Any] = {"order_id": args["order_id"], "status": status, "placed_on": _past_date(rng),
                               "total": _amount_value(pools.cents(rng, 1500, 60000))}
        if status == "delivered":
            res["delivered_on"] = _past_date(rng, 10)
        if ctx.get("total_at_least") is not None:
            res["total"] = max(res["total"], ctx["total_at_least"])
        if args.get("include_items"):
            k = rng.randrange(1, 4)
            res["items"] = [{"name": pools.product(rng)[0], "quantity": rng.randrange(1, 3)} for _ in range(k)]
        return res
    if tool == "track_shipment":
        status = rng.choice(["in_transit", "in_transit", "out_for_delivery", "delivered"])
        res = {"order_id": args["order_id"], "carrier": rng.choice(CARRIERS), "tracking_number": _track_no(rng),
               "status": status}
        if status == "delivered":
            res["delivered_on"] = _past_date(rng, 5)
        else:
            res["estimated_delivery"] = _future_date(rng, 7)
        if args.get("include_history"):
            res["history"] = [{"date": _past_date(rng, 8), "event": e}
                              for e in ["Label created", "Picked up", "Arrived at hub"][: rng.randrange(2, 4)]]
            res["history"].sort(key=lambda x: x["date"])
        return res
    if tool == "cancel_order":
        return {"order_id": args["order_id"], "cancelled": True,
                "refund_amount": _amount_value(pools.cents(rng, 1500, 40000))}
    if tool == "initiate_return":
        rma = pools.ref(rng, "RMA")
        return {"return_id": rma, "order_id": args["order_id"],
                "label_url": f"https://acme.example/returns/{rma}", "drop_off_by": _future_date(rng, 30)}
    if tool == "submit_refund":
        return {"refund_id": pools.ref(rng, "RF"), "order_id": args["order_id"], "amount": args["amount"],
                "status": "approved", "expected_in_days": rng.choice([3, 5, 7, 10])}
    if tool == "update_shipping_address":
        addr = args["street"] + (f" Apt {args['apartment']}" if "apartment" in args else "")
        return {"order_id": args["order_id"], "updated": True,
                "address": f"{addr}, {args['city']} {args['postal_code']}"}
    if tool == "search_products":
        n = rng.randrange(1, 4)
        base = args["query"]
        adj = ["Acme", "Summit", "Ridgeline", "Basecamp", "Trailhead", "Alpine", "Canyon", "Timber"]
        cap = args.get("max_price", 600)
        results = []
        for name in rng.sample(adj, n):
            price = _amount_value(rng.randrange(int(min(cap, 40) * 30), int(cap * 100)) // 100 * 100 - 1)
            results.append({"sku": pools.sku(rng), "name": f"{name} {base}", "price": price})
        return {"results": results}
    if tool == "check_product_availability":
        in_stock = ctx.get("in_stock", rng.random() < 0.75)
        res = {"sku": args["sku"]}
        if "size" in args:
            res["size"] = args["size"]
        res["in_stock"] = in_stock
        res["quantity"] = rng.randrange(1, 40) if in_stock else 0
        if "postal_code" in args:
            res["nearest_store"] = f"Acme {rng.choice(pools.cities)}" if in_stock else None
        if not in_stock:
            res["restock_date"] = _future_date(rng, 30)
        return res
    if tool == "get_account_details":
        first, last = pools.name(rng)
        return {"email": args["email"], "name": f"{first.capitalize()} {last.capitalize()}",
                "member_since": (_dt.date(2016, 1, 1) + _dt.timedelta(days=rng.randrange(3000))).isoformat(),
                "loyalty_points": rng.randrange(0, 5000), "status": "active"}
    if tool == "update_account_email":
        return {"updated": True, "email": args["new_email"]}
    if tool == "reset_password":
        return {"sent": True, "method": args.get("method", "email"), "expires_in_minutes": 30}
    if tool == "apply_discount_code":
        total = pools.cents(rng, 3000, 50000)
        disc = min(total - 100, rng.randrange(300, 5000))
        return {"order_id": args["order_id"], "code": args["code"], "applied": True,
                "discount": _amount_value(disc), "new_total": _amount_value(total - disc)}
    if tool == "list_recent_orders":
        n = min(args.get("limit", 3), rng.randrange(1, 4))
        orders = []
        dates = sorted((_past_date(rng, 90) for _ in range(n)), reverse=True)
        for i, d in enumerate(dates):
            st = ctx.get("first_status") if i == 0 and ctx.get("first_status") else rng.choice(
                ["processing", "shipped", "delivered", "delivered"])
            orders.append({"order_id": pools.order_id(rng), "placed_on": d, "status": st,
                           "total": _amount_value(pools.cents(rng, 1500, 40000))})
        return {"orders": orders}
    if tool == "escalate_to_human":
        return {"ticket_id": pools.ref(rng, "TKT"), "queue": "support",
                "expected_response": rng.choice(["within 24 hours", "within 4 hours", "within 1 business day"])}
    if tool == "schedule_callback":
        return {"confirmed": True, "reference": pools.ref(rng, "CB", 5), "date": args["date"],
                "time_window": args["time_window"]}
    raise KeyError(tool)


def final_text(tool: str, args: dict, res: dict, rng: random.Random) -> str:
    """One-sentence assistant answer summarising a successful result."""
    if tool == "check_order_status":
        s = f"Order {res['order_id']} is {STATUS_TEXT[res['status']]}"
        if res["status"] == "delivered":
            s += f"; it was delivered on {res['delivered_on']}."
        else:
            s += f" (placed on {res['placed_on']}, total {_money(res['total'])})."
        if "items" in res:
            items = ", ".join(f"{i['quantity']} x {i['name']}" for i in res["items"])
            s += f" It contains {items}."
        return s
    if tool == "track_shipment":
        if res["status"] == "delivered":
            s = f"{res['carrier']} shows order {res['order_id']} as delivered on {res['delivered_on']}."
        else:
            st = "out for delivery" if res["status"] == "out_for_delivery" else "in transit"
            s = (f"Order {res['order_id']} is {st} with {res['carrier']} (tracking {res['tracking_number']}), "
                 f"expected by {res['estimated_delivery']}.")
        if "history" in res:
            s += " Events: " + "; ".join(f"{h['date']} {h['event']}" for h in res["history"]) + "."
        return s
    if tool == "cancel_order":
        return (f"Order {res['order_id']} is cancelled, and {_money(res['refund_amount'])} will go back "
                f"to your original payment method.")
    if tool == "initiate_return":
        return (f"Your return {res['return_id']} is set up. Print the label at {res['label_url']} "
                f"and drop the package off by {res['drop_off_by']}.")
    if tool == "submit_refund":
        return (f"Done! Refund {res['refund_id']} for {_money(res['amount'])} on order {res['order_id']} "
                f"is approved and should arrive within {res['expected_in_days']} business days.")
    if tool == "update_shipping_address":
        return f"Order {res['order_id']} will now ship to {res['address']}."
    if tool == "search_products":
        items = "; ".join(f"{r['name']} ({r['sku']}, {_money(r['price'])})" for r in res["results"])
        return f"Here's what I found: {items}."
    if tool == "check_product_availability":
        size = f" in size {res['size']}" if "size" in res else ""
        if res["in_stock"]:
            s = f"Good news: {res['sku']}{size} is in stock ({res['quantity']} available)"
            return s + (f", and {res['nearest_store']} has it." if res.get("nearest_store") else ".")
        return f"Sorry, {res['sku']}{size} is out of stock; it should be back by {res['restock_date']}."
    if tool == "get_account_details":
        return (f"Your account ({res['name']}, {res['email']}) has been a member since {res['member_since']} "
                f"and has {res['loyalty_points']} loyalty points.")
    if tool == "update_account_email":
        return f"Your account email is now {res['email']}."
    if tool == "reset_password":
        via = "text message" if res["method"] == "sms" else "email"
        return f"I've sent a password reset link by {via} for {args['email']}; it expires in 30 minutes."
    if tool == "apply_discount_code":
        return (f"Code {res['code']} is applied to {res['order_id']}: you saved {_money(res['discount'])} "
                f"and the new total is {_money(res['new_total'])}.")
    if tool == "list_recent_orders":
        lst = "; ".join(f"{o['order_id']} ({o['placed_on']}, {o['status']}, {_money(o['total'])})"
                        for o in res["orders"])
        return f"Here are your recent orders: {lst}."
    if tool == "escalate_to_human":
        return (f"I've passed this to a human agent (ticket {res['ticket_id']}); "
                f"they'll get back to you {res['expected_response']}.")
    if tool == "schedule_callback":
        return (f"Your callback is booked for {res['date']} in the {res['time_window']} "
                f"(reference {res['reference']}).")
    raise KeyError(tool)
