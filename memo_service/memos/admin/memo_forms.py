"""The memo form, its translations and the forms of the memo's own pages (audience
rules, schedule)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.widgets import AdminSplitDateTime, FilteredSelectMultiple
from django.db.models import Field
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django_countries import countries

from memo_service.developers.models import Region
from memo_service.memos.compose import sandbox
from memo_service.memos.compose.checks import templates_check
from memo_service.memos.compose.context import TEMPLATE_VARIABLES
from memo_service.memos.compose.decisions import template_unlisted
from memo_service.memos.compose.sources import FALLBACK_LANGUAGE
from memo_service.memos.models import MEMO_EDITABLE, TRANSLATION_FIELDS, Memo, MemoTranslation

VARIABLES_HELP = format_html(
    "Jinja2 templates. The subject and text are plain text; the HTML is autoescaped. "
    "Each is checked at save by a trial render for a sample developer. Variables:<ul>{}</ul>",
    format_html_join("", "<li><code>{{{{ {} }}}}</code> — {}</li>", TEMPLATE_VARIABLES.items()),
)


def add_template_errors(form: forms.ModelForm, memo: Memo, language: str) -> None:
    fields = sandbox.TEMPLATE_FIELDS + sandbox.REMINDER_FIELDS
    sources = {f: form.cleaned_data[f] for f in fields if form.cleaned_data.get(f)}
    if not sources:
        return
    for field, error in templates_check(memo=memo, sources=sources, language=language).items():
        form.add_error(field, error)
    for field, source in sources.items():
        if field not in form.errors and (unlisted := template_unlisted(field, source)):
            form.add_error(field, unlisted)


def _attribute_filters(value: Any) -> dict[str, Any]:
    """A JSON object of attribute names and plain values; names are used in a database
    lookup, so they are plain words (no "__" that would turn into a lookup of its own)."""
    value = value or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k.isidentifier() and "__" not in k and isinstance(v, (str, int, float, bool))
        for k, v in value.items()
    ):
        raise forms.ValidationError('A JSON object of attribute names and values, e.g. {"plan": "pro"}.')
    return value


class LabelledSplitDateTime(AdminSplitDateTime):
    """The admin's date and time boxes, each with a label of its own (the admin's are
    bare text before each box, which names neither to a screen reader or a test)."""

    def __init__(self, what: str, attrs: dict[str, Any] | None = None) -> None:
        super().__init__(attrs)
        self.what = what

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        for sub, part in zip(context["widget"]["subwidgets"], ("date", f"time ({settings.TIME_ZONE})"), strict=True):
            sub["attrs"]["aria-label"] = f"{self.what}: {part}"
        return context


class ConfirmField(forms.BooleanField):
    """A box ticked to confirm a save, not a change of the memo (the admin's changed_data,
    which an edit is audited by, never lists it)."""

    def has_changed(self, initial: Any, data: Any) -> bool:
        return False


# The statuses in which a change voids an approval (or a request for one), and what to
# tick to save it anyway (the box is the memo page's warning, review_memo_notes.html).
VOIDS_APPROVAL = (Memo.Status.AWAITING_APPROVAL, Memo.Status.APPROVED, Memo.Status.SCHEDULED)
VOID_UNCONFIRMED = (
    "Saving this change voids the memo's approval (or its request for one): tick the box in the warning above "
    "to save it anyway."
)


def void_unconfirmed(status: str | None, data: Any) -> bool:
    """Whether a change to a memo in `status` is posted without the box that confirms it."""
    return status in VOIDS_APPROVAL and data.get("void_approval") not in ("on", "true", "1")


class MemoForm(forms.ModelForm):
    void_approval = ConfirmField(required=False)

    class Meta:
        model = Memo
        fields = "__all__"
        # 249 countries: the two-list picker with its filter box, not a Ctrl-click list.
        # The include and exclude pickers are named apart (their headings too) and styled
        # apart (memos/memo_page.css): side by side they would otherwise look the same.
        widgets = {
            "include_countries": FilteredSelectMultiple("countries to send to", is_stacked=False),
            "exclude_countries": FilteredSelectMultiple("countries to leave out", is_stacked=False),
            "traffic_countries": FilteredSelectMultiple("traffic countries", is_stacked=False),
            "ack_deadline": LabelledSplitDateTime("Acknowledgement deadline"),
        }
        labels = {
            "include_countries": "Send to these countries",
            "exclude_countries": "Leave out these countries",
        }
        help_texts = {
            "include_countries": "Developers whose account is in one of these countries (or in a region below) "
            "get the memo.",
            "exclude_countries": "Developers in these countries never get it, whatever else includes them.",
            "active_since": "Only developers active on the platform since this day; those with no activity date "
            "are left out too (the audience box says how many).",
        }

    # Left out of a post (a script's, a form older than these fields): the model's default.
    DEFAULTED = ("audience_basis", "traffic_days", "traffic_min_requests")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in self.DEFAULTED:
            if name in self.fields:
                self.fields[name].required = False

    def _clean_defaulted(self, name: str) -> Any:
        value = self.cleaned_data.get(name)
        field = Memo._meta.get_field(name)
        assert isinstance(field, Field)  # a column, not a relation
        return field.get_default() if value in (None, "") else value

    def clean_audience_basis(self) -> Any:
        return self._clean_defaulted("audience_basis")

    def clean_traffic_days(self) -> Any:
        return self._clean_defaulted("traffic_days")

    def clean_traffic_min_requests(self) -> Any:
        return self._clean_defaulted("traffic_min_requests")

    def clean_attribute_filters(self) -> dict[str, Any]:
        return _attribute_filters(self.cleaned_data.get("attribute_filters"))

    def clean_reminder_days(self) -> list[int]:
        days = self.cleaned_data.get("reminder_days") or []
        if not isinstance(days, list) or not all(isinstance(d, int) and 0 < d <= 365 for d in days):
            raise forms.ValidationError("A list of whole days before the deadline, each 1 to 365, e.g. [7, 1].")
        if len(set(days)) != len(days):
            raise forms.ValidationError("Each day may appear once.")
        return sorted(days, reverse=True)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # BaseModelForm.clean returns cleaned_data
        if self.instance.pk is not None:
            # The admin saves in one transaction: this lock holds until the memo and its
            # translations are written, so a send cannot start in between.
            status = (
                Memo.objects.select_for_update().filter(pk=self.instance.pk).values_list("status", flat=True).first()
            )
            if status not in MEMO_EDITABLE:
                raise forms.ValidationError(
                    f"This memo is {status} now (it started while you were editing): it can no longer change."
                )
            if self.has_changed() and void_unconfirmed(status, self.data):
                raise forms.ValidationError(VOID_UNCONFIRMED)
        basis = cleaned.get("audience_basis")
        if (
            basis
            and basis != Memo.Basis.ACCOUNT
            and not (cleaned.get("traffic_countries") or cleaned.get("traffic_regions"))
        ):
            self.add_error("traffic_countries", "An audience by traffic needs traffic countries or traffic regions.")
        context_memo = Memo(
            title=cleaned.get("title", ""),
            effective_date=cleaned.get("effective_date"),
            ack_deadline=cleaned.get("ack_deadline"),
        )
        add_template_errors(self, context_memo, FALLBACK_LANGUAGE)
        return cleaned


def error_places(form: forms.BaseForm, formsets: list[Any]) -> list[tuple[str, str, str]]:
    """(where, field id, first error) for each field in error, the translations' too: the
    banner over the form says where they are (a translation's can be far down)."""

    def places(f: forms.BaseForm, where: str) -> list[tuple[str, str, str]]:
        return [
            (
                f"{where}{f.fields[name].label or name}",
                f.fields[name].widget.attrs.get("id") or f"id_{f.add_prefix(name)}",
                str(errors[0]),
            )
            for name, errors in f.errors.items()
            if name in f.fields
        ]

    found = places(form, "")
    for formset in formsets:
        for n, sub in enumerate(formset.forms, start=1):
            if sub.is_bound and sub.errors:
                language = sub.data.get(sub.add_prefix("language")) or f"#{n}"
                found += places(sub, f"Translation {language} › ")
    return found


class TranslationForm(forms.ModelForm):
    parent_memo: Memo  # set by TranslationFormSet: the memo as the main form cleaned it

    class Meta:
        model = MemoTranslation
        fields = list(TRANSLATION_FIELDS)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        assert cleaned is not None  # BaseModelForm.clean returns cleaned_data
        language = cleaned.get("language")
        if language == FALLBACK_LANGUAGE:
            self.add_error("language", "English is the memo's own text; add other languages here.")
        elif language:
            add_template_errors(self, self.parent_memo, language)
        return cleaned


class TranslationFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        self._statement_in_every_language()
        if self.instance.pk is not None and self.has_changed():
            status = Memo.objects.filter(pk=self.instance.pk).values_list("status", flat=True).first()
            if void_unconfirmed(status, self.data):
                raise forms.ValidationError(VOID_UNCONFIRMED)

    def _statement_in_every_language(self) -> None:
        """A memo with its own statement has one in each translation: a blank one would show
        the generic default there (answer/statement.py), not what the composer wrote."""
        if not (self.instance.statement or "").strip():
            return
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            if not (data.get("statement") or "").strip():
                form.add_error(
                    "statement",
                    "The memo has its own statement: write this translation's, or its page shows the default one.",
                )

    def _construct_form(self, i: int, **kwargs: Any) -> forms.Form:
        form = super()._construct_form(i, **kwargs)  # type: ignore[misc]  # BaseFormSet's, missing from django-stubs
        form.parent_memo = self.instance
        return form


class TranslationInline(admin.StackedInline):
    model = MemoTranslation
    form = TranslationForm
    formset = TranslationFormSet
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Memo | None = None) -> bool:
        return (obj is None or obj.is_editable) and super().has_delete_permission(request, obj)


class AudienceRulesForm(forms.Form):
    """The audience fields of the memo form, read while the admin edits them."""

    include_countries = forms.MultipleChoiceField(choices=list(countries), required=False)
    include_regions = forms.ModelMultipleChoiceField(queryset=Region.objects.all(), required=False)
    exclude_countries = forms.MultipleChoiceField(choices=list(countries), required=False)
    active_only = forms.BooleanField(required=False)
    active_since = forms.DateField(required=False)
    attribute_filters = forms.JSONField(required=False)
    audience_basis = forms.ChoiceField(choices=Memo.Basis.choices, required=False)
    traffic_countries = forms.MultipleChoiceField(choices=list(countries), required=False)
    traffic_regions = forms.ModelMultipleChoiceField(queryset=Region.objects.all(), required=False)
    traffic_days = forms.IntegerField(min_value=1, max_value=3660, required=False)
    traffic_min_requests = forms.IntegerField(min_value=1, required=False)

    def clean_attribute_filters(self) -> dict[str, Any]:
        return _attribute_filters(self.cleaned_data.get("attribute_filters"))


# The schedule's time reads one way only: 01/02/2027 is 1 February in most of the world
# and 2 January in the United States.
SCHEDULE_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]


class ScheduleTimeInput(forms.DateTimeInput):
    """The browser's date and time picker (datetime-local). A script may post the date and
    the time apart, as send_at_0 and send_at_1."""

    input_type = "datetime-local"

    def __init__(self) -> None:
        super().__init__(format="%Y-%m-%dT%H:%M")

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if name not in data and f"{name}_0" in data:
            return f"{data.get(f'{name}_0', '')} {data.get(f'{name}_1', '')}".strip()
        return super().value_from_datadict(data, files, name)


class ScheduleTimeField(forms.DateTimeField):
    """A time in the service's time zone (TIME_ZONE), written year first; a time the zone's
    clocks pass twice or skip is refused, saying which."""

    def to_python(self, value: Any) -> dt.datetime | None:
        if isinstance(value, str) and value.strip():
            value = value.strip()
            for fmt in SCHEDULE_FORMATS:
                try:
                    naive = dt.datetime.strptime(value, fmt)
                    break
                except ValueError:
                    continue
            else:
                raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
            return _in_zone(naive)
        return super().to_python(value)


def _in_zone(naive: dt.datetime) -> dt.datetime:
    zone = timezone.get_current_timezone()
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        if first.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None) != naive:
            raise forms.ValidationError(
                f"{naive:%Y-%m-%d %H:%M} does not exist in {zone}: the clocks skip it. Choose a time outside the jump.",
                code="nonexistent",
            )
        raise forms.ValidationError(
            f"{naive:%Y-%m-%d %H:%M} happens twice in {zone}: the clocks go back over it. Choose a time outside "
            "the repeated hour.",
            code="ambiguous",
        )
    return first


class ScheduleForm(forms.Form):
    send_at = ScheduleTimeField(
        widget=ScheduleTimeInput(),
        error_messages={
            "invalid": "Enter the date and time year first, as the picker does: 2027-07-09 14:00. "
            "A date like 01/02/2027 reads as two different days."
        },
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        zone = timezone.get_current_timezone()
        now = timezone.localtime(timezone.now(), zone)
        field = self.fields["send_at"]
        field.label = f"Send at ({zone})"
        field.help_text = (
            f"A time in {zone}, the service's time zone (TIME_ZONE); it is {now:%Y-%m-%d %H:%M} there now. "
            "Kept in the database: restarts do not lose it."
        )
        field.widget.attrs["min"] = f"{now:%Y-%m-%dT%H:%M}"

    def clean_send_at(self) -> dt.datetime:
        at: dt.datetime = self.cleaned_data["send_at"]
        now = timezone.now()
        if at <= now:
            zone = timezone.get_current_timezone()
            raise forms.ValidationError(
                f"{timezone.localtime(at, zone):%Y-%m-%d %H:%M} {zone} has passed (it is "
                f"{timezone.localtime(now, zone):%Y-%m-%d %H:%M} now): choose a later time.",
                code="past",
            )
        return at


class WithdrawForm(forms.Form):
    """The Withdraw… page's one field: why, in words the developers who received it read."""

    reason = forms.CharField(
        label="Reason",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Required. Those who received the memo are emailed this, as you write it, with the notice that "
        "it was withdrawn; it is also in the evidence.",
        error_messages={"required": "A withdrawal needs a reason: the developers who received the memo are told it."},
    )
