"""The admin's UI strings: English, Italian, Polish and Russian, complete (a test checks every catalog has
every key; a key still missing would fall back to English)."""

from __future__ import annotations

from babel import Locale

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
    "sender_email": "Reply-to address", "postal_address": "Postal address (in every marketing email)", "timezone": "Shop timezone",
    "customize_email": "Customize this email (this language)", "subject": "Subject", "plain_text": "Plain text",
    "try_again": "Try again", "scheduled_again": "Scheduled again.", "would_move": "This change would move", "conditions": "Conditions", "add_condition": "Add a condition",
    "remove_condition": "Remove this condition", "field": "Field", "operator": "Operator", "value": "Value", "save_email": "Save email", "use_default": "Use the default", "default_restored": "Default restored.",
    "languages": "Email languages", "primary_language": "Language for shoppers of any other language",
    "moves_into": "into", "as_table": "Show as a table",
}  # fmt: skip

IT = {
    "overview": "Panoramica", "rules": "Regole", "shoppers": "Clienti", "settings": "Impostazioni",
    "prospect": "Potenziale", "engaged": "Interessato", "first_time": "Primo acquisto", "repeat": "Abituale",
    "loyal": "Fedele", "at_risk": "A rischio", "lapsed": "Perso",
    "shoppers_per_stage": "Clienti per fase", "messages_per_play": "Messaggi per azione",
    "revenue_per_play": "Ricavi attribuiti per azione (7 giorni o il suo codice)", "stage_moves": "Passaggi di fase per settimana",
    "freshness": "Aggiornamento dei dati", "play": "Azione", "sent": "Inviati", "skipped": "Saltati", "deferred": "In attesa",
    "held_out": "Gruppo di controllo", "failed": "Non riusciti", "orders": "Ordini", "revenue": "Ricavi", "week": "Settimana",
    "moves": "Passaggi", "what": "Cosa", "when": "Quando", "last_webhook": "Ultimo webhook",
    "last_reconciliation": "Ultima riconciliazione", "backfill": "Importazione dello storico", "no_revenue_yet": "Ancora nessun ordine attribuito.",
    "on": "Attiva", "rule": "Regola", "trigger": "Attivazione", "edit": "Modifica", "name": "Nome",
    "delay_minutes": "Ritardo (minuti)", "discount_percent": "Sconto (%)", "valid_days": "Codice valido per (giorni)",
    "priority": "Priorità", "min_orders": "Solo clienti con almeno questo numero di ordini", "save": "Salva",
    "back": "Indietro", "saved": "Salvato.", "preview": "Anteprima", "language": "Lingua", "send_test_to": "Invia una prova a",
    "send_test": "Invia prova", "sent_to": "Prova inviata a", "would_reach": "Questa regola raggiungerebbe",
    "shoppers_now": "clienti ora", "eg": "ad es.", "search": "Cerca clienti",
    "search_placeholder": "Email o nome", "shopper": "Cliente", "stage": "Fase", "timeline": "Cronologia",
    "suppress": "Non inviare più marketing a questo cliente", "suppressed": "Escluso",
    "engaged_days": "Interessato: attività negli ultimi (giorni)", "at_risk_days": "A rischio dopo (giorni senza ordini)",
    "lapsed_days": "Perso dopo (giorni senza ordini)", "loyal_orders": "Fedele da (ordini)",
    "cap_per_day": "Email di marketing al giorno, al massimo", "cap_per_week": "Email di marketing a settimana, al massimo",
    "quiet_start_hour": "Inizio delle ore di silenzio", "quiet_end_hour": "Fine delle ore di silenzio", "sender_name": "Nome del mittente",
    "sender_email": "Indirizzo per le risposte", "postal_address": "Indirizzo postale (in ogni email di marketing)", "timezone": "Fuso orario del negozio",
    "customize_email": "Personalizza questa email (in questa lingua)", "subject": "Oggetto", "plain_text": "Testo semplice",
    "try_again": "Riprova", "scheduled_again": "Riprogrammato.", "would_move": "Questa modifica sposterebbe", "conditions": "Condizioni", "add_condition": "Aggiungi una condizione",
    "remove_condition": "Rimuovi questa condizione", "field": "Campo", "operator": "Operatore", "value": "Valore", "save_email": "Salva email", "use_default": "Usa quella predefinita", "default_restored": "Predefinita ripristinata.",
    "languages": "Lingue delle email", "primary_language": "Lingua per i clienti di ogni altra lingua",
    "moves_into": "verso", "as_table": "Mostra come tabella",
}  # fmt: skip

PL = {
    "overview": "Przegląd", "rules": "Reguły", "shoppers": "Klienci", "settings": "Ustawienia",
    "prospect": "Potencjalny", "engaged": "Zaangażowany", "first_time": "Pierwszy zakup", "repeat": "Powracający",
    "loyal": "Lojalny", "at_risk": "Zagrożony", "lapsed": "Utracony",
    "shoppers_per_stage": "Klienci według etapu", "messages_per_play": "Wiadomości według akcji",
    "revenue_per_play": "Przychód przypisany do akcji (7 dni lub jej kod)", "stage_moves": "Zmiany etapów w tygodniu",
    "freshness": "Aktualność danych", "play": "Akcja", "sent": "Wysłane", "skipped": "Pominięte", "deferred": "Oczekujące",
    "held_out": "Grupa kontrolna", "failed": "Nieudane", "orders": "Zamówienia", "revenue": "Przychód", "week": "Tydzień",
    "moves": "Zmiany", "what": "Co", "when": "Kiedy", "last_webhook": "Ostatni webhook",
    "last_reconciliation": "Ostatnie uzgodnienie", "backfill": "Import historii", "no_revenue_yet": "Brak przypisanych zamówień.",
    "on": "Włączona", "rule": "Reguła", "trigger": "Wyzwalacz", "edit": "Edytuj", "name": "Nazwa",
    "delay_minutes": "Opóźnienie (minuty)", "discount_percent": "Rabat (%)", "valid_days": "Kod ważny przez (dni)",
    "priority": "Priorytet", "min_orders": "Tylko klienci z co najmniej tyloma zamówieniami", "save": "Zapisz",
    "back": "Wstecz", "saved": "Zapisano.", "preview": "Podgląd", "language": "Język", "send_test_to": "Wyślij test do",
    "send_test": "Wyślij test", "sent_to": "Test wysłany do", "would_reach": "Ta reguła dotarłaby do",
    "shoppers_now": "klientów teraz", "eg": "np.", "search": "Szukaj klientów",
    "search_placeholder": "E-mail lub imię", "shopper": "Klient", "stage": "Etap", "timeline": "Historia",
    "suppress": "Nie wysyłaj już marketingu do tego klienta", "suppressed": "Wykluczony",
    "engaged_days": "Zaangażowany: aktywność w ciągu (dni)", "at_risk_days": "Zagrożony po (dniach bez zamówienia)",
    "lapsed_days": "Utracony po (dniach bez zamówienia)", "loyal_orders": "Lojalny od (zamówień)",
    "cap_per_day": "Najwyżej e-maili marketingowych dziennie", "cap_per_week": "Najwyżej e-maili marketingowych tygodniowo",
    "quiet_start_hour": "Początek godzin ciszy", "quiet_end_hour": "Koniec godzin ciszy", "sender_name": "Nazwa nadawcy",
    "sender_email": "Adres do odpowiedzi", "postal_address": "Adres pocztowy (w każdym e-mailu marketingowym)", "timezone": "Strefa czasowa sklepu",
    "customize_email": "Dostosuj ten e-mail (w tym języku)", "subject": "Temat", "plain_text": "Zwykły tekst",
    "try_again": "Spróbuj ponownie", "scheduled_again": "Zaplanowano ponownie.", "would_move": "Ta zmiana przeniosłaby", "conditions": "Warunki", "add_condition": "Dodaj warunek",
    "remove_condition": "Usuń ten warunek", "field": "Pole", "operator": "Operator", "value": "Wartość", "save_email": "Zapisz e-mail", "use_default": "Użyj domyślnego", "default_restored": "Przywrócono domyślny.",
    "languages": "Języki e-maili", "primary_language": "Język dla klientów mówiących innym językiem",
    "moves_into": "do", "as_table": "Pokaż jako tabelę",
}  # fmt: skip

RU = {
    "overview": "Обзор", "rules": "Правила", "shoppers": "Покупатели", "settings": "Настройки",
    "prospect": "Потенциальный", "engaged": "Заинтересован", "first_time": "Первая покупка", "repeat": "Повторный",
    "loyal": "Лояльный", "at_risk": "Под угрозой", "lapsed": "Ушедший",
    "shoppers_per_stage": "Покупатели по этапам", "messages_per_play": "Сообщения по действиям",
    "revenue_per_play": "Выручка по действиям (7 дней или его код)", "stage_moves": "Переходы между этапами по неделям",
    "freshness": "Актуальность данных", "play": "Действие", "sent": "Отправлено", "skipped": "Пропущено", "deferred": "Ожидает",
    "held_out": "Контрольная группа", "failed": "Ошибка", "orders": "Заказы", "revenue": "Выручка", "week": "Неделя",
    "moves": "Переходы", "what": "Что", "when": "Когда", "last_webhook": "Последний вебхук",
    "last_reconciliation": "Последняя сверка", "backfill": "Импорт истории", "no_revenue_yet": "Пока нет привязанных заказов.",
    "on": "Вкл.", "rule": "Правило", "trigger": "Триггер", "edit": "Изменить", "name": "Название",
    "delay_minutes": "Задержка (минуты)", "discount_percent": "Скидка (%)", "valid_days": "Код действует (дней)",
    "priority": "Приоритет", "min_orders": "Только покупатели, у которых заказов не меньше", "save": "Сохранить",
    "back": "Назад", "saved": "Сохранено.", "preview": "Предпросмотр", "language": "Язык", "send_test_to": "Отправить тест на",
    "send_test": "Отправить тест", "sent_to": "Тест отправлен на", "would_reach": "Это правило охватило бы",
    "shoppers_now": "покупателей сейчас", "eg": "напр.", "search": "Поиск покупателей",
    "search_placeholder": "E-mail или имя", "shopper": "Покупатель", "stage": "Этап", "timeline": "История",
    "suppress": "Больше не отправлять рекламу этому покупателю", "suppressed": "Исключён",
    "engaged_days": "Заинтересован: активность за (дней)", "at_risk_days": "Под угрозой через (дней без заказа)",
    "lapsed_days": "Ушедший через (дней без заказа)", "loyal_orders": "Лояльный от (заказов)",
    "cap_per_day": "Не больше рекламных писем в день", "cap_per_week": "Не больше рекламных писем в неделю",
    "quiet_start_hour": "Начало тихих часов", "quiet_end_hour": "Конец тихих часов", "sender_name": "Имя отправителя",
    "sender_email": "Адрес для ответов", "postal_address": "Почтовый адрес (в каждом рекламном письме)", "timezone": "Часовой пояс магазина",
    "customize_email": "Изменить это письмо (на этом языке)", "subject": "Тема", "plain_text": "Простой текст",
    "try_again": "Повторить", "scheduled_again": "Запланировано снова.", "would_move": "Это изменение переместит", "conditions": "Условия", "add_condition": "Добавить условие",
    "remove_condition": "Удалить это условие", "field": "Поле", "operator": "Оператор", "value": "Значение", "save_email": "Сохранить письмо", "use_default": "Вернуть стандартное", "default_restored": "Стандартное восстановлено.",
    "languages": "Языки писем", "primary_language": "Язык для покупателей с любым другим языком",
    "moves_into": "в", "as_table": "Показать таблицей",
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
