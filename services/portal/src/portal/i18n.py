"""Every text of the portal in German (the default) and English, in plain words.

Pure. A page asks `text(lang, key)`; a key missing in one language is a bug a unit test catches, so
no page ever shows a key or falls back to the other language by accident.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("de", "en")
DEFAULT = "de"

TEXTS: Mapping[str, Mapping[str, str]] = {
    "de": {
        "title": "Portal des Hub-Knotens",
        "skip": "Zum Inhalt springen",
        "language": "English",
        "sign_in": "Anmelden",
        "sign_out": "Abmelden",
        "welcome": "Willkommen",
        "welcome_text": "Hier sehen Sie Ihre Einwilligungen, wer Ihre Daten genutzt hat, Ihre Befunde und Fragebögen. "
        "Ärztinnen und Ärzte sehen hier den Behandlungsverlauf ihrer Patientinnen und Patienten über "
        "Einrichtungen hinweg.",
        "signed_in_as": "Angemeldet als",
        "nav_consents": "Meine Einwilligungen",
        "nav_ledger": "Wer hat meine Daten genutzt?",
        "nav_record": "Meine Daten",
        "nav_questionnaires": "Fragebögen",
        "nav_enrol": "Zugang freischalten",
        "nav_patients": "Patientin oder Patient suchen",
        "nav_enrolments": "Freischaltcode ausstellen",
        "not_enrolled": "Ihr Zugang ist noch keiner Person zugeordnet. Geben Sie den Freischaltcode ein, den Sie von "
        "Ihrer Einrichtung erhalten haben.",
        "enrol_code": "Freischaltcode",
        "enrol_submit": "Zugang freischalten",
        "enrolled": "Ihr Zugang ist jetzt Ihrer Person zugeordnet.",
        "consents_intro": "Hier entscheiden Sie für jeden Teil der Einwilligung, ob er gilt. Ein Widerruf gilt "
        "ab heute; "
        "was vorher geschah, bleibt sichtbar.",
        "policy": "Teil der Einwilligung",
        "state": "Stand heute",
        "ACCEPTED": "erteilt",
        "DECLINED": "widerrufen oder abgelehnt",
        "UNKNOWN": "nicht erteilt",
        "grant": "Erteilen",
        "withdraw": "Widerrufen",
        "blocks": "Ein Widerruf verhindert ab sofort",
        "blocks_nothing": "Kein Ablauf dieses Verbunds hängt davon ab.",
        "history": "Verlauf Ihrer Entscheidungen",
        "version": "Fassung",
        "date": "Datum",
        "receipt": "Quittung",
        "receipt_text": "Ihre Entscheidung ist gespeichert. Bewahren Sie diese Quittung auf.",
        "receipt_consent": "Einwilligungsfassung",
        "receipt_policy": "Teil der Einwilligung",
        "receipt_action": "Entscheidung",
        "receipt_from": "gilt ab",
        "receipt_node": "Hub-Knoten",
        "receipt_recorded": "gespeichert am",
        "now_blocked": "Damit ist ab sofort nicht mehr möglich",
        "granted": "erteilt",
        "withdrawn": "widerrufen",
        "ledger_intro": "Jeder Zugriff auf Ihre Daten wird protokolliert: wer, wann, wozu. Forschungsprojekte "
        "sehen Ihre "
        "Daten nur unter einem Pseudonym.",
        "when": "Wann",
        "who": "Wer",
        "what": "Was",
        "purpose": "Wozu",
        "outcome": "Ergebnis",
        "where": "Wo protokolliert",
        "TREAT": "Behandlung",
        "HRESCH": "Forschung",
        "HOPERAT": "Betrieb des Knotens",
        "project": "Projekt",
        "success": "erfolgt",
        "refused": "abgelehnt",
        "no_entries": "Keine Einträge.",
        "record_intro": "Ihre Daten an diesem Hub-Knoten, mit der Einrichtung, die sie erfasst hat.",
        "source": "Quelle",
        "entry": "Eintrag",
        "questionnaires_intro": "Ihre Antworten werden an Ihrem Hub-Knoten gespeichert und Ihrem "
        "Behandlungsteam angezeigt.",
        "q_title": "Lebensqualität in der Nachsorge",
        "q_wellbeing": "Wie ging es Ihnen in der letzten Woche insgesamt? (0 = sehr schlecht, 4 = sehr gut)",
        "q_pain": "Wie stark waren Ihre Schmerzen? (0 = keine, 4 = sehr stark)",
        "q_fatigue": "Wie erschöpft fühlten Sie sich? (0 = gar nicht, 4 = sehr)",
        "q_note": "Möchten Sie uns noch etwas mitteilen?",
        "q_submit": "Antworten senden",
        "q_saved": "Danke, Ihre Antworten sind gespeichert.",
        "q_earlier": "Frühere Antworten",
        "find_intro": "Suchen Sie eine Patientin oder einen Patienten Ihrer Einrichtung über die "
        "Krankenversichertennummer "
        "(KVNR) oder die eigene Patientennummer.",
        "kvnr": "KVNR",
        "local_id": "Patientennummer dieser Einrichtung",
        "search": "Suchen",
        "summary": "Einrichtungsübergreifende Übersicht",
        "interactions": "Wechselwirkungen",
        "no_interactions": "Keine bekannte Wechselwirkung in der Medikation.",
        "elsewhere": "Kürzlich an einer anderen Einrichtung untersucht",
        "elsewhere_text": "Vor einer Wiederholung prüfen:",
        "days_ago": "vor {days} Tagen",
        "care_summary": "Verlauf an eine andere Einrichtung senden",
        "target": "Empfangende Einrichtung",
        "send": "Senden",
        "task_completed": "Gesendet: {count} Einträge an {target}.",
        "task_failed": "Nicht gesendet: {reason}",
        "staff_intro": "Stellen Sie einer Patientin oder einem Patienten einen einmaligen Freischaltcode aus. "
        "Die Person "
        "wird über die Nummer dieser Einrichtung oder die KVNR gefunden, nie über Name oder Geburtsdatum.",
        "issue": "Code ausstellen",
        "code_issued": "Freischaltcode für den Brief an die Patientin oder den Patienten",
        "valid_until": "gültig bis",
        "refused_title": "Nicht möglich",
        "back": "Zur Startseite",
        "reason_signin": "Die Anmeldung konnte nicht abgeschlossen werden. Bitte melden Sie sich erneut an.",
        "reason_csrf": "Dieses Formular ist abgelaufen oder kam nicht von dieser Seite. Bitte laden Sie die Seite neu.",
        "reason_expired": "Ihre Sitzung ist abgelaufen. Bitte melden Sie sich erneut an.",
        "reason_role": "Diese Seite ist für Ihre Rolle nicht freigegeben.",
        "reason_not_yours": "Sie können nur Ihre eigenen Daten sehen.",
        "reason_next": "Diese Weiterleitung ist nicht erlaubt.",
        "reason_policy": "Diesen Teil der Einwilligung gibt es nicht.",
        "reason_no_patient": "Diese Person ist an dieser Einrichtung nicht bekannt.",
        "reason_no_consent": "Die Patientin oder der Patient hat der Bereitstellung für die Behandlung (Teil 5 der "
        "Einwilligung) nicht zugestimmt oder sie widerrufen. Ohne diese Einwilligung ist keine Einsicht möglich.",
        "reason_enrolment": "Der Freischaltcode ist ungültig, abgelaufen oder schon benutzt.",
        "reason_not_enrolled": "Ihr Zugang ist noch keiner Person zugeordnet.",
        "reason_upstream": "Ein Dienst des Hub-Knotens ist gerade nicht erreichbar. Bitte versuchen Sie es "
        "später erneut.",
        "reason_input": "Die Eingabe ist nicht gültig.",
        "reason_not_found": "Diese Seite gibt es nicht.",
        "reason_already_enrolled": "Ihr Zugang ist bereits einer Person zugeordnet.",
    },
    "en": {
        "title": "Hub node portal",
        "skip": "Skip to content",
        "language": "Deutsch",
        "sign_in": "Sign in",
        "sign_out": "Sign out",
        "welcome": "Welcome",
        "welcome_text": "See your consents, who used your data, your records and questionnaires here. Clinicians see "
        "their patients' journeys across sites.",
        "signed_in_as": "Signed in as",
        "nav_consents": "My consents",
        "nav_ledger": "Who used my data?",
        "nav_record": "My record",
        "nav_questionnaires": "Questionnaires",
        "nav_enrol": "Link my account",
        "nav_patients": "Find a patient",
        "nav_enrolments": "Issue an enrolment code",
        "not_enrolled": "Your account is not linked to a person yet. Enter the enrolment code your site gave you.",
        "enrol_code": "Enrolment code",
        "enrol_submit": "Link my account",
        "enrolled": "Your account is now linked to you.",
        "consents_intro": "Decide for each part of the consent whether it applies. A withdrawal counts from "
        "today; what "
        "happened before stays visible.",
        "policy": "Part of the consent",
        "state": "Today",
        "ACCEPTED": "given",
        "DECLINED": "withdrawn or refused",
        "UNKNOWN": "not given",
        "grant": "Give",
        "withdraw": "Withdraw",
        "blocks": "Withdrawing stops at once",
        "blocks_nothing": "No process of this federation depends on it.",
        "history": "History of your decisions",
        "version": "Version",
        "date": "Date",
        "receipt": "Receipt",
        "receipt_text": "Your decision is stored. Keep this receipt.",
        "receipt_consent": "Consent version",
        "receipt_policy": "Part of the consent",
        "receipt_action": "Decision",
        "receipt_from": "counts from",
        "receipt_node": "Hub node",
        "receipt_recorded": "recorded at",
        "now_blocked": "From now on this is no longer possible",
        "granted": "given",
        "withdrawn": "withdrawn",
        "ledger_intro": "Every use of your data is recorded: who, when, why. Research projects only see your "
        "data under "
        "a pseudonym.",
        "when": "When",
        "who": "Who",
        "what": "What",
        "purpose": "Why",
        "outcome": "Outcome",
        "where": "Recorded by",
        "TREAT": "treatment",
        "HRESCH": "research",
        "HOPERAT": "running the node",
        "project": "Project",
        "success": "done",
        "refused": "refused",
        "no_entries": "No entries.",
        "record_intro": "Your data at this hub node, with the site that recorded it.",
        "source": "Source",
        "entry": "Entry",
        "questionnaires_intro": "Your answers are stored at your hub node and shown to your care team.",
        "q_title": "Quality of life in aftercare",
        "q_wellbeing": "How were you overall last week? (0 = very bad, 4 = very good)",
        "q_pain": "How strong was your pain? (0 = none, 4 = very strong)",
        "q_fatigue": "How exhausted did you feel? (0 = not at all, 4 = very)",
        "q_note": "Anything else you want to tell us?",
        "q_submit": "Send answers",
        "q_saved": "Thank you, your answers are stored.",
        "q_earlier": "Earlier answers",
        "find_intro": "Find a patient of your site by their health insurance number (KVNR) or your site's "
        "patient number.",
        "kvnr": "KVNR",
        "local_id": "This site's patient number",
        "search": "Search",
        "summary": "Cross-sector summary",
        "interactions": "Interactions",
        "no_interactions": "No known interaction in the medication.",
        "elsewhere": "Recently examined at another site",
        "elsewhere_text": "Check before repeating:",
        "days_ago": "{days} days ago",
        "care_summary": "Send the journey to another site",
        "target": "Receiving site",
        "send": "Send",
        "task_completed": "Sent: {count} entries to {target}.",
        "task_failed": "Not sent: {reason}",
        "staff_intro": "Issue a patient a one-time enrolment code. The person is found by this site's number or the "
        "KVNR, never by name or birth date.",
        "issue": "Issue code",
        "code_issued": "Enrolment code for the letter to the patient",
        "valid_until": "valid until",
        "refused_title": "Not possible",
        "back": "Back to the start page",
        "reason_signin": "Signing in could not be completed. Please sign in again.",
        "reason_csrf": "This form has expired or did not come from this page. Please reload the page.",
        "reason_expired": "Your session has expired. Please sign in again.",
        "reason_role": "This page is not open to your role.",
        "reason_not_yours": "You can only see your own data.",
        "reason_next": "This redirect is not allowed.",
        "reason_policy": "There is no such part of the consent.",
        "reason_no_patient": "This person is not known at this site.",
        "reason_no_consent": "The patient has not given (or has withdrawn) consent to make their data available for "
        "treatment (part 5 of the consent). Without it nothing can be shown.",
        "reason_enrolment": "The enrolment code is not valid, has expired or was used already.",
        "reason_not_enrolled": "Your account is not linked to a person yet.",
        "reason_upstream": "A service of the hub node cannot be reached right now. Please try again later.",
        "reason_input": "The input is not valid.",
        "reason_not_found": "There is no such page.",
        "reason_already_enrolled": "Your account is already linked to a person.",
    },
}


def text(lang: str, key: str, **values: object) -> str:
    """The text `key` in `lang` (German for an unknown language), with `{name}` placeholders filled in."""
    found = TEXTS.get(lang, TEXTS[DEFAULT])[key]
    return found.format(**values) if values else found


def language(requested: str | None, remembered: str | None) -> str:
    """The page's language: asked for in the URL, else remembered in a cookie, else German."""
    for candidate in (requested, remembered):
        if candidate in LANGUAGES:
            return str(candidate)
    return DEFAULT
