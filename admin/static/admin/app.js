// Lifecycle's embedded admin. Every data call carries a session token: App Bridge's `shopify.idToken()`
// inside the Shopify admin; outside it (development, `lifecycle demo`), the `id_token` of the page URL.
"use strict";
const boot = JSON.parse(document.getElementById("boot").textContent);
const T = (key) => boot.strings[key] || key;
const STAGES = ["prospect", "engaged", "first_time", "repeat", "loyal", "at_risk", "lapsed"];
const COLORS = { prospect: "#8a8a8a", engaged: "#2c6ecb", first_time: "#47c1bf", repeat: "#50b83c",
  loyal: "#007f5f", at_risk: "#eec200", lapsed: "#de3618" };

async function sessionToken() {
  if (window.shopify && typeof window.shopify.idToken === "function") {
    try { return await window.shopify.idToken(); } catch (e) { /* outside the admin: fall through */ }
  }
  return new URLSearchParams(window.location.search).get("id_token");
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${await sessionToken()}`, Accept: "application/json" };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(`/app/api${path}`, {
    method: options.method || "GET", headers, body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  const data = await answer.json().catch(() => ({}));
  return { ok: answer.ok, status: answer.status, data };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [event, fn] of Object.entries(v)) node.addEventListener(event, fn);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c))))));
}

// --- tabs ------------------------------------------------------------------------------------------------
const loaders = { overview: loadOverview, rules: loadRules, shoppers: loadShoppers, settings: loadSettings };
document.querySelectorAll("[role=tab]").forEach((tab) => {
  tab.textContent = T(tab.dataset.i18n);
  tab.addEventListener("click", () => select(tab));
  tab.addEventListener("keydown", (event) => {
    const tabs = [...document.querySelectorAll("[role=tab]")];
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) { const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length]; next.focus(); select(next); }
  });
});
function select(tab) {
  document.querySelectorAll("[role=tab]").forEach((t) => {
    const on = t === tab;
    t.setAttribute("aria-selected", on); t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  });
  loaders[tab.getAttribute("aria-controls")]();
}

// --- overview --------------------------------------------------------------------------------------------
function stageChart(stages) {
  const width = 560, bar = 26, gap = 10, label = 90;
  const max = Math.max(1, ...stages.map((s) => s.shoppers));
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${stages.length * (bar + gap)}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", T("shoppers_per_stage") + ": " + stages.map((s) => `${T(s.stage)} ${s.shoppers}`).join(", "));
  svg.id = "stage-chart";
  stages.forEach((s, i) => {
    const y = i * (bar + gap);
    const w = Math.max(2, ((width - label - 60) * s.shoppers) / max);
    svg.insertAdjacentHTML("beforeend",
      `<text x="0" y="${y + 18}" font-size="13">${T(s.stage)}</text>` +
      `<rect data-stage="${s.stage}" x="${label}" y="${y}" width="${w}" height="${bar}" rx="4" fill="${COLORS[s.stage]}"></rect>` +
      `<text x="${label + w + 6}" y="${y + 18}" font-size="13">${s.shoppers}</text>`);
  });
  return svg;
}

// Weekly flows: one stacked column per week, a segment per stage moved into (colour of that stage).
function flowChart(weeks) {
  const width = 560, height = 200, axis = 24, legend = 22, top = 14;
  const into = weeks.map((w) => {
    const counts = {};
    for (const m of w.moves) { const to = m.move.split("→")[1]; counts[to] = (counts[to] || 0) + m.count; }
    return { week: w.week, counts, total: Object.values(counts).reduce((a, b) => a + b, 0) };
  });
  const max = Math.max(1, ...into.map((w) => w.total));
  const slot = (width - 40) / Math.max(1, into.length), column = Math.min(44, slot * 0.6);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + axis + legend}`);
  svg.setAttribute("role", "img");
  svg.id = "flow-chart";
  svg.setAttribute("aria-label", T("stage_moves") + ": " + into.map((w) => `${w.week}: ` +
    STAGES.filter((st) => w.counts[st]).map((st) => `${w.counts[st]} ${T("moves_into")} ${T(st)}`).join(", ")).join("; "));
  into.forEach((w, i) => {
    const x = 40 + i * slot + (slot - column) / 2;
    let y = top + height;
    for (const st of STAGES) {
      if (!w.counts[st]) continue;
      const h = Math.max(1, ((height - top) * w.counts[st]) / max);
      y -= h;
      svg.insertAdjacentHTML("beforeend", `<rect data-week="${w.week}" data-stage="${st}" x="${x}" y="${y}" width="${column}" height="${h}" fill="${COLORS[st]}"><title>${w.week}: ${w.counts[st]} ${T("moves_into")} ${T(st)}</title></rect>`);
    }
    svg.insertAdjacentHTML("beforeend", `<text x="${x + column / 2}" y="${y - 4}" font-size="11" text-anchor="middle">${w.total}</text>` +
      `<text x="${x + column / 2}" y="${top + height + 16}" font-size="11" text-anchor="middle">${w.week.slice(5)}</text>`);
  });
  let lx = 40, ly = top + height + axis + 4;
  for (const st of STAGES) {
    const step = 14 + T(st).length * 6.5 + 12;
    if (lx + step > width) { lx = 40; ly += legend; }
    svg.insertAdjacentHTML("beforeend", `<rect x="${lx}" y="${ly}" width="10" height="10" fill="${COLORS[st]}"></rect>` +
      `<text x="${lx + 14}" y="${ly + 9}" font-size="11">${T(st)}</text>`);
    lx += step;
  }
  svg.setAttribute("viewBox", `0 0 ${width} ${ly + legend}`);
  return svg;
}

async function loadOverview() {
  const root = document.getElementById("overview");
  const { ok, data } = await api("/overview");
  if (!ok) { root.replaceChildren(el("p", { class: "error" }, data.error || "error")); return; }
  const fresh = data.freshness || {};
  const backfill = fresh.backfill || {};
  root.replaceChildren(el("div", { class: "cards" },
    el("div", { class: "card" }, el("h2", {}, T("shoppers_per_stage")), stageChart(data.stages)),
    el("div", { class: "card" }, el("h2", {}, T("messages_per_play")),
      table([T("play"), T("sent"), T("skipped"), T("deferred"), T("held_out"), T("failed")],
        data.messages.map((m) => [m.play, m.sent || 0, m.skipped || 0, (m.deferred || 0) + (m.pending || 0), m.held_out || 0, m.failed || 0]))),
    el("div", { class: "card" }, el("h2", {}, T("revenue_per_play")),
      data.revenue.length ? table([T("play"), T("orders"), T("revenue")], data.revenue.map((r) => [r.play, r.orders, r.revenue]))
        : el("p", { class: "muted" }, T("no_revenue_yet"))),
    el("div", { class: "card" }, el("h2", {}, T("stage_moves")),
      data.flows.length ? [flowChart(data.flows), el("details", {}, el("summary", {}, T("as_table")),
        table([T("week"), T("moves")], data.flows.map((w) => [w.week, w.moves.map((m) => `${m.move} ${m.count}`).join(" · ")])))]
        : el("p", { class: "muted" }, "—")),
    el("div", { class: "card" }, el("h2", {}, T("freshness")),
      table([T("what"), T("when")], [
        [T("last_webhook"), fresh.last_webhook_at || "—"],
        [T("last_reconciliation"), fresh.last_reconciled_at || "—"],
        [T("backfill"), `${backfill.status || "—"} ${backfill.orders ? `(${backfill.orders} ${T("orders")})` : ""}`],
      ]))));
  loadPredictions(root.querySelector(".cards"));
}

// --- predictions and proof: the model's fit, lift per rule, the value at risk -----------------------------
const percent = (x, digits = 0) => `${(x * 100).toFixed(digits)} %`;
const signedPercent = (x) => `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(1)} %`;
const money = (x, currency) => `${Number(x).toFixed(2)}${currency ? " " + currency : ""}`;

// Weekly repeat orders, forecast (dashed) against actual (solid, with points); the held-out weeks shaded.
// A last period shorter than a week is left out of the plot (its orders are in the totals below it).
function fitChart(allWeeks) {
  const weeks = allWeeks.filter((w) => w.days === 7);
  const width = 640, height = 220, left = 40, right = 16, top = 16, bottom = 44;
  const max = Math.max(1, ...weeks.map((w) => Math.max(w.forecast, w.actual)));
  const x = (i) => left + ((width - left - right) * i) / Math.max(1, weeks.length - 1);
  const y = (v) => top + height - (height * v) / max;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${top + height + bottom}`);
  svg.setAttribute("role", "img");
  svg.id = "fit-chart";
  const held = weeks.filter((w) => w.holdout);
  const sum = (list, key) => list.reduce((a, w) => a + w[key], 0);
  svg.setAttribute("aria-label", `${T("repeat_orders_week")}, ${T("holdout_period")}: ${T("forecast")} ${sum(held, "forecast").toFixed(1)}, ${T("actual")} ${sum(held, "actual")}`);
  const first = weeks.findIndex((w) => w.holdout);
  if (first >= 0) {
    const x0 = x(Math.max(0, first - 1));
    svg.insertAdjacentHTML("beforeend", `<rect class="holdout" x="${x0}" y="${top}" width="${x(weeks.length - 1) - x0}" height="${height}" fill="#ececec"></rect>` +
      `<text x="${x(weeks.length - 1) - 6}" y="${top + 16}" font-size="13" fill="#616161" text-anchor="end">${T("holdout_period")}</text>`);
  }
  for (const v of [0, max / 2, max]) {
    svg.insertAdjacentHTML("beforeend", `<line x1="${left}" x2="${width - right}" y1="${y(v)}" y2="${y(v)}" stroke="#d4d4d4"></line>` +
      `<text x="${left - 6}" y="${y(v) + 4}" font-size="12" text-anchor="end">${Math.round(v)}</text>`);
  }
  const line = (key) => weeks.map((w, i) => `${x(i).toFixed(1)},${y(w[key]).toFixed(1)}`).join(" ");
  svg.insertAdjacentHTML("beforeend",
    `<polyline data-series="forecast" points="${line("forecast")}" fill="none" stroke="#005bd3" stroke-width="2.5" stroke-dasharray="7 4"></polyline>` +
    `<polyline data-series="actual" points="${line("actual")}" fill="none" stroke="#303030" stroke-width="1.5"></polyline>`);
  weeks.forEach((w, i) => svg.insertAdjacentHTML("beforeend",
    `<circle data-week="${w.week_end}" data-actual="${w.actual}" data-forecast="${w.forecast}" cx="${x(i)}" cy="${y(w.actual)}" r="2.5" fill="#303030"><title>${w.week_end}: ${T("actual")} ${w.actual}, ${T("forecast")} ${w.forecast.toFixed(1)}</title></circle>`));
  const ticks = [[0, "start"], [Math.max(0, first - 1), "middle"], [weeks.length - 1, "end"]];
  ticks.filter(([i], n) => ticks.findIndex(([j]) => j === i) === n).forEach(([i, anchor]) => svg.insertAdjacentHTML("beforeend",
    `<text x="${x(i)}" y="${top + height + 16}" font-size="12" text-anchor="${anchor}">${weeks[i].week_end}</text>`));
  const ly = top + height + 34;
  svg.insertAdjacentHTML("beforeend",
    `<line x1="${left}" x2="${left + 26}" y1="${ly}" y2="${ly}" stroke="#005bd3" stroke-width="2.5" stroke-dasharray="7 4"></line><text x="${left + 32}" y="${ly + 4}" font-size="12">${T("forecast")}</text>` +
    `<line x1="${left + 130}" x2="${left + 156}" y1="${ly}" y2="${ly}" stroke="#303030" stroke-width="1.5"></line><text x="${left + 162}" y="${ly + 4}" font-size="12">${T("actual")}</text>`);
  return svg;
}

function modelCard(model) {
  const card = el("div", { class: "card wide", id: "model-card" }, el("h2", {}, T("model_fit")));
  if (!model.fitted) { card.append(el("p", { id: "model-not-fitted" }, `${T("not_fitted")}: ${model.reason}`)); return card; }
  const holdout = model.holdout || {};
  if (holdout.weeks) card.append(fitChart(holdout.weeks));
  const bg = model.bg_nbd, gg = model.gamma_gamma, f = (v) => Number(v).toFixed(3);
  card.append(table([T("what"), T("value")], [
    [T("holdout_totals"), holdout.reason ? holdout.reason
      : el("span", { id: "holdout-totals" }, `${T("forecast")} ${holdout.forecast_repeat_orders}, ${T("actual")} ${holdout.actual_repeat_orders} (${T("calibrated_until")} ${holdout.calibration_end_day}, → ${holdout.end_day})`)],
    ["BG/NBD", el("span", { id: "bg-nbd" }, `r ${f(bg.r)}, α ${f(bg.alpha)} (${bg.unit}), a ${f(bg.a)}, b ${f(bg.b)}`)],
    ["Gamma-Gamma", el("span", { id: "gamma-gamma" }, `p ${f(gg.p)}, q ${f(gg.q)}, γ ${f(gg.gamma)}`)],
    [T("model_cutoff"), model.cutoff_day],
    [T("shoppers_used"), `${model.shoppers} (${T("repeat_buyers")}: ${model.repeat_buyers})`],
  ]));
  return card;
}

function liftCard(rows) {
  const card = el("div", { class: "card wide", id: "lift-card" }, el("h2", {}, T("lift_per_rule")));
  if (!rows.length) { card.append(el("p", { class: "muted" }, T("no_holdout_rules"))); return card; }
  const arm = (a) => `${a.conversions} / ${a.runs}`;
  const head = [T("rule"), T("sent"), T("held_out"), T("lift"), T("interval_95"), T("incremental_revenue")];
  const body = rows.map((r) => {
    const cells = [r.rule, arm(r.sent), arm(r.held_out)].map((c) => el("td", {}, c));
    if (!r.lift) return el("tr", {}, cells, el("td", { colspan: 3, class: "reason muted", "data-rule": r.rule }, r.reason));
    return el("tr", {}, cells, el("td", {}, el("strong", { "data-rule": r.rule }, signedPercent(r.lift.absolute_lift))),
      el("td", {}, `${signedPercent(r.lift.low)} … ${signedPercent(r.lift.high)}`), el("td", {}, money(r.lift.incremental_revenue)));
  });
  card.append(el("table", {}, el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, body)),
    el("p", { class: "muted" }, `${T("sent")} / ${T("held_out")}: ${T("ordered_in_window")} ${rows[0].attribution_days} ${T("days")}`));
  return card;
}

function atRiskCard(atRisk) {
  return el("div", { class: "card", id: "at-risk-card" }, el("h2", {}, T("at_risk_value")),
    el("p", { class: "figure", id: "at-risk-value" }, money(atRisk.predicted_clv_365d, atRisk.currency)),
    el("p", { class: "muted", id: "at-risk-count" }, `${atRisk.shoppers} ${T("at_risk")} · ${atRisk.with_forecast} ${T("with_forecast")}`));
}

async function loadPredictions(cards) {
  const { ok, data } = await api("/overview/predictions");
  if (!ok) { cards.append(el("p", { class: "error" }, data.error || "error")); return; }
  cards.prepend(modelCard(data.model), liftCard(data.lift), atRiskCard(data.at_risk));
}

// --- rules -----------------------------------------------------------------------------------------------
async function loadRules() {
  const root = document.getElementById("rules");
  const { data } = await api("/rules");
  root.replaceChildren(el("h2", {}, T("rules")), table([T("on"), T("rule"), T("trigger"), ""], data.map((rule) => [
    el("input", { type: "checkbox", class: "switch", "aria-label": `${T("on")}: ${rule.name}`, checked: rule.enabled,
      on: { change: (e) => api(`/rules/${rule.key}/enabled`, { method: "POST", body: { enabled: e.target.checked } }) } }),
    rule.name, rule.trigger,
    el("button", { class: "plain", on: { click: () => editRule(rule) } }, `${T("edit")} ${rule.name}`),
  ])));
}

function field(id, text, input) {
  return el("div", {}, el("label", { for: id }, text), input, el("div", { class: "error", id: `${id}-error`, role: "alert" }));
}

function editRule(rule) {
  const root = document.getElementById("rules");
  const discount = rule.params.discount || {};
  const form = el("form", { id: "rule-form", novalidate: true },
    field("rule-name", T("name"), el("input", { id: "rule-name", value: rule.name })),
    field("rule-trigger", T("trigger"), el("select", { id: "rule-trigger" },
      boot.triggers.map((t) => el("option", { value: t, selected: t === rule.trigger }, t)))),
    field("rule-delay", T("delay_minutes"), el("input", { id: "rule-delay", type: "number", value: rule.delay_minutes })),
    field("rule-percent", T("discount_percent"), el("input", { id: "rule-percent", type: "number", value: discount.percent ?? "" })),
    field("rule-days", T("valid_days"), el("input", { id: "rule-days", type: "number", value: discount.valid_days ?? "" })),
    field("rule-priority", T("priority"), el("input", { id: "rule-priority", type: "number", value: rule.priority })),
    field("rule-min-orders", T("min_orders"), el("input", { id: "rule-min-orders", type: "number",
      value: (rule.conditions.find((c) => c.field === "orders_count" && c.op === ">=") || {}).value ?? "" })),
    el("fieldset", { id: "conditions" }, el("legend", {}, T("conditions")),
      el("div", { id: "condition-rows" }),
      el("button", { type: "button", class: "plain", id: "add-condition", on: { click: () => addCondition({ field: "orders_count", op: ">=", value: 1 }) } }, T("add_condition")),
      el("div", { class: "error", id: "rule-conditions-error", role: "alert" })),
    el("p", { id: "audience", "aria-live": "polite", class: "muted" }),
    el("div", { class: "row" },
      el("button", { type: "submit", class: "primary" }, T("save")),
      el("button", { type: "button", class: "plain", on: { click: () => loadRules() } }, T("back"))),
    el("p", { id: "rule-saved", class: "ok", "aria-live": "polite" }));
  const locale = el("select", { id: "preview-locale" }, boot.locales.map((l) => el("option", { value: l }, boot.language_names[l])));
  const previewPane = el("div", {},
    el("h3", {}, T("preview")), field("preview-locale", T("language"), locale),
    el("p", { id: "preview-subject" }), el("iframe", { class: "preview", id: "preview-frame", title: T("preview"), sandbox: "" }),
    el("details", { id: "template-editor" }, el("summary", {}, T("customize_email")),
      field("tpl-subject", T("subject"), el("input", { id: "tpl-subject" })),
      field("tpl-html", "HTML", el("textarea", { id: "tpl-html" })),
      field("tpl-text", T("plain_text"), el("textarea", { id: "tpl-text" })),
      el("div", { class: "row" },
        el("button", { type: "button", class: "plain", id: "tpl-save", on: { click: () => saveTemplate() } }, T("save_email")),
        el("button", { type: "button", class: "plain", id: "tpl-reset", on: { click: () => resetTemplate() } }, T("use_default"))),
      el("p", { id: "tpl-saved", class: "ok", "aria-live": "polite" })),
    field("test-to", T("send_test_to"), el("input", { id: "test-to", type: "email", placeholder: "you@example.com" })),
    el("button", { type: "button", class: "plain", id: "test-send", on: { click: () => testSend(rule) } }, T("send_test")),
    el("p", { id: "test-result", "aria-live": "polite" }));
  root.replaceChildren(el("h2", {}, `${T("edit")}: ${rule.name}`), el("div", { class: "editor" }, el("div", {}, form, backtestPane(rule, () => draft())), previewPane));

  const rows = document.getElementById("condition-rows");
  const addCondition = (c) => {
    const row = el("div", { class: "row condition" },
      el("select", { "aria-label": T("field"), class: "c-field" }, boot.condition_fields.map((f) => el("option", { value: f, selected: f === c.field }, f))),
      el("select", { "aria-label": T("operator"), class: "c-op" }, boot.operators.map((o) => el("option", { value: o, selected: o === c.op }, o))),
      el("input", { "aria-label": T("value"), class: "c-value", value: Array.isArray(c.value) ? c.value.join(", ") : String(c.value ?? "") }),
      el("button", { type: "button", class: "plain", "aria-label": T("remove_condition"), on: { click: () => { row.remove(); form.dispatchEvent(new Event("input")); } } }, "×"));
    rows.append(row);
  };
  const parseValue = (op, raw) => {
    const one = (v) => (v === "true" ? true : v === "false" ? false : v !== "" && !isNaN(Number(v)) ? Number(v) : v);
    return op === "in" ? raw.split(",").map((v) => one(v.trim())).filter((v) => v !== "") : one(raw.trim());
  };
  rule.conditions.filter((c) => !(c.field === "orders_count" && c.op === ">=")).forEach(addCondition);
  const draft = () => {
    const value = (id) => document.getElementById(id).value;
    const percent = value("rule-percent"), days = value("rule-days"), minOrders = value("rule-min-orders");
    const conditions = [...rows.querySelectorAll(".condition")].map((r) => {
      const op = r.querySelector(".c-op").value;
      return { field: r.querySelector(".c-field").value, op, value: parseValue(op, r.querySelector(".c-value").value) };
    });
    if (minOrders !== "") conditions.push({ field: "orders_count", op: ">=", value: Number(minOrders) });
    return { ...rule, name: value("rule-name"), trigger: value("rule-trigger"), delay_minutes: Number(value("rule-delay")), priority: Number(value("rule-priority")),
      conditions, params: { ...rule.params, discount: percent === "" ? null : { percent: Number(percent), valid_days: Number(days || 14) } } };
  };
  const showErrors = (errors) => {
    form.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
    const where = { name: "rule-name", delay_minutes: "rule-delay", priority: "rule-priority", trigger: "rule-trigger" };
    for (const [key, messages] of Object.entries(errors || {})) {
      if (key === "params") {
        const discountErrors = (messages.discount || {});
        for (const [k, m] of Object.entries(discountErrors)) document.getElementById(k === "percent" ? "rule-percent-error" : "rule-days-error").textContent = [].concat(m).join(" ");
      } else if (where[key]) document.getElementById(`${where[key]}-error`).textContent = [].concat(messages).join(" ");
      else if (key === "conditions") document.getElementById("rule-conditions-error").textContent =
        Object.entries(messages).map(([i, m]) => `#${Number(i) + 1}: ${Object.values(m).flat().join(" ")}`).join("; ");
    }
  };
  let asked = 0;  // answers can arrive out of order: show only the latest question's
  const refreshAudience = async () => {
    const mine = ++asked;
    const { ok, data } = await api("/audience", { method: "POST", body: draft() });
    if (mine !== asked) return;
    document.getElementById("audience").textContent = ok
      ? `${T("would_reach")} ${data.count} ${T("shoppers_now")}${data.examples.length ? ", " + T("eg") + " " + data.examples.map((e) => e.email).join(", ") : ""}`
      : "";
  };
  const templateFields = () => ({ subject: document.getElementById("tpl-subject").value,
    html: document.getElementById("tpl-html").value, text: document.getElementById("tpl-text").value });
  let editing = false;  // the merchant touched the template: preview their version
  let previewed = 0;
  const refreshPreview = async () => {
    if (!rule.params.template) return;
    const mine = ++previewed;
    const discount = draft().params.discount;
    const body = { template: rule.params.template, locale: locale.value, percent: discount ? discount.percent : null };
    if (editing) Object.assign(body, templateFields());
    const { ok, data } = await api("/preview", { method: "POST", body });
    if (mine !== previewed) return;
    document.getElementById("tpl-html-error").textContent = ok ? "" : [].concat((data.errors || {}).html || []).join(" ");
    if (ok) { document.getElementById("preview-subject").textContent = data.subject; document.getElementById("preview-frame").srcdoc = data.html; }
  };
  const loadTemplate = async () => {
    if (!rule.params.template) { document.getElementById("template-editor").hidden = true; return; }
    const { data } = await api(`/templates/${rule.params.template}/${locale.value}`);
    document.getElementById("tpl-subject").value = data.subject;
    document.getElementById("tpl-html").value = data.html;
    document.getElementById("tpl-text").value = data.text;
    editing = data.custom;
    refreshPreview();
  };
  saveTemplate = async () => {
    const { ok, data } = await api(`/templates/${rule.params.template}/${locale.value}`, { method: "PUT", body: templateFields() });
    for (const name of ["subject", "html", "text"]) document.getElementById(`tpl-${name}-error`).textContent = ok ? "" : [].concat((data.errors || {})[name] || []).join(" ");
    document.getElementById("tpl-saved").textContent = ok ? T("saved") : "";
  };
  resetTemplate = async () => {
    await api(`/templates/${rule.params.template}/${locale.value}`, { method: "DELETE" });
    document.getElementById("tpl-saved").textContent = T("default_restored");
    loadTemplate();
  };
  document.getElementById("template-editor").addEventListener("input", () => { editing = true; refreshPreview(); });
  form.addEventListener("input", () => { refreshAudience(); refreshPreview(); });
  form.addEventListener("change", () => { refreshAudience(); });
  locale.addEventListener("change", loadTemplate);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const { ok, data } = await api(`/rules/${rule.key}`, { method: "PUT", body: draft() });
    showErrors(ok ? {} : data.errors);
    document.getElementById("rule-saved").textContent = ok ? T("saved") : "";
    if (ok) { Object.assign(rule, data); refreshAudience(); }
  });
  refreshAudience(); loadTemplate();
}
let saveTemplate = () => {}, resetTemplate = () => {};

// Backtest: the rule as edited (unsaved), replayed over the store's history without sending anything.
function backtestPane(rule, draft) {
  const daysBefore = (iso, n) => new Date(Date.parse(iso) - n * 86400000).toISOString().slice(0, 10);
  const result = el("div", { id: "backtest-result", "aria-live": "polite" });
  const run = async () => {
    const body = { from: document.getElementById("backtest-from").value, to: document.getElementById("backtest-to").value, rule: draft() };
    result.replaceChildren(el("p", { class: "muted" }, "…"));
    const { ok, status, data } = await api(`/rules/${rule.key}/backtest`, { method: "POST", body });
    result.replaceChildren(...(ok ? backtestFigures(data) : [el("p", { class: "error", id: "backtest-error", role: "alert" },
      data.error || Object.entries(data.errors || {}).map(([k, m]) => `${k}: ${[].concat(m).join(" ")}`).join("; ") || `HTTP ${status}`)]));
  };
  return el("fieldset", { id: "backtest" }, el("legend", {}, T("backtest_title")),
    el("div", { class: "row" },
      el("label", { for: "backtest-from" }, T("date_from")), el("input", { id: "backtest-from", type: "date", value: daysBefore(boot.today, 90) }),
      el("label", { for: "backtest-to" }, T("date_to")), el("input", { id: "backtest-to", type: "date", value: boot.today }),
      el("button", { type: "button", class: "plain", id: "backtest-run", on: { click: run } }, T("backtest"))),
    result);
}

function backtestFigures(data) {
  const when = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") : "—");
  const figures = [
    ["shoppers_reached", data.shoppers_reached], ["messages_triggered", data.messages_triggered],
    ["messages_allowed", data.messages_allowed], ["messages_capped", data.messages_capped],
    ["messages_quiet_hours_delayed", data.messages_quiet_hours_delayed], ["ordered_within_window", data.ordered_within_window],
    ["baseline_conversion", data.baseline_conversion === null ? "—" : percent(data.baseline_conversion, 1)],
    ["attribution_days", data.attribution_days], ["first_at", when(data.first_at)], ["last_at", when(data.last_at)],
  ];
  return [
    table([T("what"), T("value")], figures.map(([k, v]) => [T(k), el("span", { "data-figure": k }, String(v))])),
    data.by_week.length ? el("details", {}, el("summary", {}, T("as_table")),
      table([T("week"), T("messages")], data.by_week.map((w) => [w.week_start, w.messages]))) : "",
    data.notes.length ? el("div", {}, el("h3", {}, T("notes")), el("ul", { id: "backtest-notes" }, data.notes.map((n) => el("li", {}, n)))) : "",
  ];
}

async function testSend(rule) {
  const to = document.getElementById("test-to").value;
  const body = { template: rule.params.template, locale: document.getElementById("preview-locale").value };
  if (to) body.to = to;
  const { ok, data } = await api("/test-send", { method: "POST", body });
  document.getElementById("test-to-error").textContent = ok ? "" : Object.values(data.errors || { e: [data.error] }).flat().join(" ");
  document.getElementById("test-result").textContent = ok ? `${T("sent_to")} ${data.sent_to}` : "";
}

// --- shoppers --------------------------------------------------------------------------------------------
async function loadShoppers() {
  const root = document.getElementById("shoppers");
  const search = el("input", { id: "shopper-search", type: "search", placeholder: T("search_placeholder") });
  const results = el("div", { id: "shopper-results" });
  const run = async () => {
    const { data } = await api(`/shoppers?q=${encodeURIComponent(search.value)}`);
    results.replaceChildren(table([T("shopper"), T("stage"), T("orders"), ""], data.map((s) => [
      `${s.name || ""} ${s.email || ""}`, el("span", { class: "tag" }, T(s.stage)), s.orders_count,
      el("button", { class: "plain", on: { click: () => openShopper(s.id) } }, `${T("timeline")}: ${s.email || s.id}`)])));
  };
  search.addEventListener("input", run);
  root.replaceChildren(field("shopper-search", T("search"), search), results);
  run();
}

async function openShopper(id) {
  const root = document.getElementById("shoppers");
  const { data } = await api(`/shoppers/${id}`);
  const suppress = el("button", { class: "plain", on: { click: async () => {
    await api(`/shoppers/${id}/suppress`, { method: "POST", body: {} }); suppress.textContent = T("suppressed"); suppress.disabled = true; } } }, T("suppress"));
  root.replaceChildren(
    el("h2", {}, `${data.name || ""} ${data.email || ""}`),
    el("p", { id: "stage-reason" }, el("span", { class: "tag" }, T(data.stage)), " ", data.stage_reason || ""),
    predictionBlock(data),
    el("div", { class: "row" }, suppress, el("button", { class: "plain", on: { click: loadShoppers } }, T("back"))),
    el("ol", { class: "timeline", id: "timeline" }, data.timeline.map((e) =>
      el("li", {}, el("strong", {}, `${e.at.slice(0, 16).replace("T", " ")} · ${e.text}`), e.detail ? ` — ${e.detail}` : "",
        e.resendable ? el("button", { class: "plain", on: { click: async (ev) => {
          const { ok, data: answer } = await api(`/runs/${e.run_id}/resend`, { method: "POST", body: {} });
          ev.target.replaceWith(ok ? T("scheduled_again") : answer.error); } } }, T("try_again")) : ""))));
}

function predictionBlock(s) {
  if (s.forecast_missing) return el("p", { id: "prediction", class: "muted" }, `${T("no_prediction")}: ${s.forecast_missing}`);
  return el("div", { id: "prediction" }, el("h3", {}, T("prediction")), table([T("what"), T("value")], [
    [T("p_alive"), el("span", { "data-field": "p_alive" }, percent(s.p_alive))],
    [T("expected_orders_90d"), el("span", { "data-field": "expected_orders_90d" }, s.expected_orders_90d.toFixed(2))],
    [T("predicted_next_order_at"), el("span", { "data-field": "predicted_next_order_at" }, s.predicted_next_order_at ? s.predicted_next_order_at.slice(0, 10) : "—")],
    [T("predicted_clv_365d"), el("span", { "data-field": "predicted_clv_365d" }, s.predicted_clv_365d === null ? "—" : money(s.predicted_clv_365d))],
  ]));
}

// --- settings --------------------------------------------------------------------------------------------
// Email languages: which ones the shop writes in, and the one for shoppers whose language is not among them.
function languagesField(chosen) {
  const primary = el("select", { id: "setting-primary-language" },
    boot.locales.map((l) => el("option", { value: l, selected: l === chosen[0] }, boot.language_names[l])));
  return el("fieldset", { id: "setting-languages" }, el("legend", {}, T("languages")),
    el("div", { class: "row" }, boot.locales.map((l) => el("label", { class: "check" },
      el("input", { type: "checkbox", name: "language", value: l, checked: chosen.includes(l) }), boot.language_names[l]))),
    field("setting-primary-language", T("primary_language"), primary),
    el("div", { class: "error", id: "setting-languages-error", role: "alert" }));
}
function chosenLanguages() {
  const primary = document.getElementById("setting-primary-language").value;
  const checked = [...document.querySelectorAll("#setting-languages input[name=language]:checked")].map((i) => i.value);
  return [primary, ...checked.filter((l) => l !== primary)];
}

async function loadSettings() {
  const root = document.getElementById("settings");
  const { data } = await api("/settings");
  const names = Object.keys(data).filter((n) => n !== "languages");
  const input = (n) => typeof data[n] === "boolean"
    ? el("input", { id: `setting-${n}`, name: n, type: "checkbox", class: "switch", checked: data[n] })
    : el("input", { id: `setting-${n}`, name: n, value: data[n] ?? "", type: typeof data[n] === "number" ? "number" : "text" });
  const valueOf = (n) => {
    const node = document.getElementById(`setting-${n}`);
    if (typeof data[n] === "boolean") return node.checked;
    return typeof data[n] === "number" ? Number(node.value) : (node.value === "" ? null : node.value);
  };
  const form = el("form", { novalidate: true }, names.map((n) => field(`setting-${n}`, T(n), input(n))),
  languagesField(data.languages),
  el("p", { id: "settings-impact", class: "muted", "aria-live": "polite" }),
  el("button", { type: "submit", class: "primary" }, T("save")), el("p", { id: "settings-saved", class: "ok", "aria-live": "polite" }));
  const stageNames = ["engaged_days", "at_risk_days", "lapsed_days", "loyal_orders", "personal_stages"];
  let asked = 0;  // answers can arrive out of order: show only the latest question's
  const refreshImpact = async (event) => {
    if (!stageNames.includes(event.target.name)) return;
    const mine = ++asked;
    const body = Object.fromEntries(stageNames.map((n) => [n, valueOf(n)]));
    const { ok, data: impact } = await api("/settings/impact", { method: "POST", body });
    if (mine !== asked) return;
    const personal = impact.personal || {};
    document.getElementById("settings-impact").textContent = ok
      ? `${T("would_move")} ${impact.would_move} ${T("shoppers_now")}${impact.moves.length ? ": " + impact.moves.map((m) => `${m.move} ${m.count}`).join(", ") : ""}` +
        (personal.on && !personal.applies ? ` (${T("fixed_thresholds_stay")}: ${personal.reason})` : "")
      : "";
  };
  form.addEventListener("input", refreshImpact);
  form.addEventListener("change", (event) => { if (event.target.type === "checkbox") refreshImpact(event); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = Object.fromEntries(names.map((n) => [n, valueOf(n)]));
    body.languages = chosenLanguages();
    const { ok, data: answer } = await api("/settings", { method: "PUT", body });
    form.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
    for (const [k, m] of Object.entries(ok ? {} : answer.errors)) document.getElementById(`setting-${k}-error`).textContent = [].concat(m).join(" ");
    document.getElementById("settings-saved").textContent = ok ? T("saved") : "";
  });
  root.replaceChildren(el("h2", {}, T("settings")), form);
}

loadOverview();
