"""The admin's UI strings: English first, then Italian, Polish and Russian (missing keys fall back)."""

from __future__ import annotations

from babel import Locale

LOCALES = ("en", "it", "pl", "ru")

EN = {
    "overview": "Overview", "rules": "Rules", "shoppers": "Shoppers", "settings": "Settings",
    "prospect": "Prospect", "engaged": "Engaged", "first_time": "First-time", "repeat": "Repeat",
    "loyal": "Loyal", "at_risk": "At risk", "lapsed": "Lapsed",
    "shoppers_per_stage": "Shoppers per stage", "messages_per_play": "Messages per play",
    "revenue_per_play": "Revenue attributed per play (7 days or its code)", "stage_moves": "Stage moves per week",
    "freshness": "Data freshness", "play": "Play", "sent": "Sent", "skipped": "Skipped", "deferred": "Waiting",
    "held_out": "Held out", "failed": "Failed", "orders": "Orders", "revenue": "Revenue", "week": "Week",
    "moves": "Moves", "what": "What", "when": "When", "last_webhook": "Last webhook",
    "last_reconciliation": "Last reconciliation", "backfill": "History import", "no_revenue_yet": "No attributed orders yet.",
    "on": "On", "rule": "Rule", "trigger": "Trigger", "edit": "Edit", "name": "Name",
    "delay_minutes": "Delay (minutes)", "discount_percent": "Discount (%)", "valid_days": "Code valid for (days)",
    "priority": "Priority", "min_orders": "Only shoppers with at least this many orders", "save": "Save",
    "back": "Back", "saved": "Saved.", "preview": "Preview", "language": "Language", "send_test_to": "Send a test to",
    "send_test": "Send test", "sent_to": "Test sent to", "would_reach": "This rule would reach",
    "shoppers_now": "shoppers now", "eg": "e.g.", "search": "Search shoppers",
    "search_placeholder": "Email or name", "shopper": "Shopper", "stage": "Stage", "timeline": "Timeline",
    "suppress": "Stop marketing to this shopper", "suppressed": "Suppressed",
    "engaged_days": "Engaged: activity within (days)", "at_risk_days": "At risk after (days without order)",
    "lapsed_days": "Lapsed after (days without order)", "loyal_orders": "Loyal from (orders)",
    "cap_per_day": "Marketing emails per day at most", "cap_per_week": "Marketing emails per week at most",
    "quiet_start_hour": "Quiet hours start", "quiet_end_hour": "Quiet hours end", "sender_name": "Sender name",
    "sender_email": "Sender address", "timezone": "Shop timezone",
    "customize_email": "Customize this email (this language)", "subject": "Subject", "plain_text": "Plain text",
    "try_again": "Try again", "scheduled_again": "Scheduled again.", "would_move": "This change would move", "conditions": "Conditions", "add_condition": "Add a condition",
    "remove_condition": "Remove this condition", "field": "Field", "operator": "Operator", "value": "Value", "save_email": "Save email", "use_default": "Use the default", "default_restored": "Default restored.",
    "languages": "Email languages", "primary_language": "Language for shoppers of any other language",
}  # fmt: skip

IT = {
    "overview": "Panoramica", "rules": "Regole", "shoppers": "Clienti", "settings": "Impostazioni",
    "prospect": "Potenziale", "engaged": "Interessato", "first_time": "Primo acquisto", "repeat": "Abituale",
    "loyal": "Fedele", "at_risk": "A rischio", "lapsed": "Perso", "shoppers_per_stage": "Clienti per fase",
    "messages_per_play": "Messaggi per azione", "save": "Salva", "back": "Indietro", "saved": "Salvato.",
    "edit": "Modifica", "search": "Cerca clienti", "timeline": "Cronologia",
}  # fmt: skip

PL = {
    "overview": "Przegląd", "rules": "Reguły", "shoppers": "Klienci", "settings": "Ustawienia",
    "prospect": "Potencjalny", "engaged": "Zaangażowany", "first_time": "Pierwszy zakup", "repeat": "Powracający",
    "loyal": "Lojalny", "at_risk": "Zagrożony", "lapsed": "Utracony", "shoppers_per_stage": "Klienci według etapu",
    "messages_per_play": "Wiadomości według akcji", "save": "Zapisz", "back": "Wstecz", "saved": "Zapisano.",
    "edit": "Edytuj", "search": "Szukaj klientów", "timeline": "Historia",
}  # fmt: skip

RU = {
    "overview": "Обзор", "rules": "Правила", "shoppers": "Покупатели", "settings": "Настройки",
    "prospect": "Потенциальный", "engaged": "Заинтересован", "first_time": "Первая покупка", "repeat": "Повторный",
    "loyal": "Лояльный", "at_risk": "Под угрозой", "lapsed": "Ушедший", "shoppers_per_stage": "Покупатели по этапам",
    "messages_per_play": "Сообщения по действиям", "save": "Сохранить", "back": "Назад", "saved": "Сохранено.",
    "edit": "Изменить", "search": "Поиск покупателей", "timeline": "История",
}  # fmt: skip

CATALOGS = {"en": EN, "it": IT, "pl": PL, "ru": RU}


def pick(requested: str | None) -> str:
    """Shopify passes the merchant's locale (`it-IT`, `pl`…) to App Home; fall back to English."""
    language = (requested or "en").split("-")[0].lower()
    return language if language in CATALOGS else "en"


def language_name(locale: str) -> str:
    """A language by its own name ("Italiano", "Polski"), as language pickers show it."""
    name = Locale.parse(locale).get_display_name(locale)
    return name[:1].upper() + name[1:]


def strings(locale: str) -> dict[str, str]:
    return {**EN, **CATALOGS[locale]}
