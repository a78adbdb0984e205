"""`lifecycle predict` (fit and check a shop's purchase model) and `lifecycle lift` (each rule's sent
arm against its hold-out group)."""

from __future__ import annotations

import json

import click

from plugin import clock
from plugin.cli.group import build_app, main, now_option, pin, shop_or_exit
from plugin.store import predictions
from plugin.store.prediction_reports import holdout_report, lift_row, model_report
from plugin.store.rule_lift import lift_by_rule


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--unit", type=click.Choice(["days", "weeks"]), default="days", show_default=True)
@now_option
@click.option("--json", "as_json", is_flag=True)
def predict(shop_domain: str, unit: str, now: str | None, as_json: bool) -> None:
    """Fit the shop's purchase model now (stored with its cutoff) and check it on a holdout."""
    pin(now)

    db = build_app().extensions["lifecycle.db"]
    with db.session() as session:
        shop = shop_or_exit(session, shop_domain)
    instant = clock.now()
    fit = predictions.fit_shop(db, shop.id, instant, unit=unit)
    report = model_report(fit)
    if fit.reason is None:
        report["holdout"] = holdout_report(predictions.holdout_check(db, shop.id, instant, unit=unit))
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for line in model_lines(report):
        click.echo(line)


def model_lines(report: dict) -> list[str]:
    lines = [f"model: {report['model']}, orders up to {report['cutoff_day']}"]
    if not report["fitted"]:
        return [*lines, f"not fitted: {report['reason']}"]
    bg, gg = report["bg_nbd"], report["gamma_gamma"]
    lines += [
        f"BG/NBD: r = {bg['r']:.4f}, alpha = {bg['alpha']:.4f} ({bg['unit']}), a = {bg['a']:.4f}, "
        f"b = {bg['b']:.4f}; log-likelihood {bg['log_likelihood']:.1f}",
        f"Gamma-Gamma: p = {gg['p']:.4f}, q = {gg['q']:.4f}, gamma = {gg['gamma']:.4f}; "
        f"log-likelihood {gg['log_likelihood']:.1f}",
        f"shoppers used: {report['shoppers']} ({report['repeat_buyers']} repeat buyers)",
    ]
    holdout = report["holdout"]
    if "reason" in holdout:
        return [*lines, f"holdout check: {holdout['reason']}"]
    return [
        *lines,
        f"holdout check: fitted on orders up to {holdout['calibration_end_day']}, repeat orders to "
        f"{holdout['end_day']}: forecast {holdout['forecast_repeat_orders']}, "
        f"actual {holdout['actual_repeat_orders']}",
    ]


@main.command()
@click.option("--shop", "shop_domain", required=True)
@click.option("--json", "as_json", is_flag=True)
def lift(shop_domain: str, as_json: bool) -> None:
    """Per rule with a hold-out group: the sent arm's conversion against the held-out arm's, 95 % interval."""
    with build_app().extensions["lifecycle.db"].session() as session:
        shop = shop_or_exit(session, shop_domain)
        measured = [lift_row(m) for m in lift_by_rule(session, shop, clock.now())]
    if as_json:
        click.echo(json.dumps(measured, indent=2))
        return
    if not measured:
        click.echo("no rule has a hold-out group (holdout_percent > 0)")
    for row in measured:
        sent, held = row["sent"], row["held_out"]
        click.echo(
            f"{row['rule']} ({row['holdout_percent']} % held out): "
            f"sent {sent['conversions']}/{sent['runs']}, held out {held['conversions']}/{held['runs']} "
            f"ordered within {row['attribution_days']} days"
        )
        if row["lift"] is None:
            click.echo(f"  {row['reason']}")
        else:
            found = row["lift"]
            click.echo(
                f"  lift {found['absolute_lift']:+.1%} "
                f"(95 % CI {found['low']:+.1%} to {found['high']:+.1%}), "
                f"incremental revenue {found['incremental_revenue']:.2f}"
            )
