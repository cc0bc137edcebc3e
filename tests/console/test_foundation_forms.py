"""Every form that includes ``includes/form_fields.html`` gets an error summary (each error linked to its field) and
Django's ``aria-invalid``/``aria-describedby`` on the bad fields; an htmx form's 422 answer is its partial with them."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django import forms
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.test import Client

from deployments import secrets
from tenants.models import Tenant

Console = Callable[[User | None], Client]


class SampleForm(forms.Form):
    name = forms.CharField(help_text="lower-case letters")
    kind = forms.ChoiceField(choices=[("a", "A"), ("b", "B")], widget=forms.RadioSelect)
    token = forms.CharField(widget=forms.HiddenInput)

    def clean(self) -> dict[str, object]:
        self.add_error(None, "the form as a whole is refused")
        return self.cleaned_data


def summary_of(html: str) -> str:
    found = re.search(r"<div class=\"form-errors error-summary\".*?</div>", html, flags=re.S)
    assert found is not None, html
    return found.group(0)


def test_a_refused_form_lists_every_error_linked_to_its_field() -> None:
    form = SampleForm({"name": "", "kind": "", "token": ""})
    assert not form.is_valid()

    html = render_to_string("includes/form_fields.html", {"form": form})

    summary = summary_of(html)
    assert 'role="alert" tabindex="-1" data-error-summary' in summary
    assert '<li class="error">the form as a whole is refused</li>' in summary
    assert '<a href="#id_name">Name: This field is required.</a>' in summary
    assert '<a href="#id_kind_0">Kind: This field is required.</a>' in summary  # a radio group: its first input
    assert "<li>This field is required.</li>" in summary  # a hidden field's error is text: nothing to go to
    assert 'href="#id_token"' not in summary
    name_input = re.search(r"<input[^>]*name=\"name\"[^>]*>", html)
    assert name_input is not None
    assert 'aria-invalid="true"' in name_input.group(0)
    assert 'aria-describedby="id_name_helptext id_name_error"' in name_input.group(0)
    assert 'id="id_name_error"' in html


def test_a_form_without_errors_has_no_summary() -> None:
    html = render_to_string("includes/form_fields.html", {"form": SampleForm()})

    assert "error-summary" not in html and "aria-invalid" not in html


@pytest.mark.django_db
def test_an_htmx_form_answers_422_with_its_partial_errors_and_all(console: Console, adam: User, acme: Tenant) -> None:
    secrets.create_secret(acme, name="hf-token", value="hf_first-value", actor=None)

    response = console(adam).post(
        "/t/acme/secrets/", {"action": "rotate", "name": "hf-token", "value": ""}, HTTP_HX_REQUEST="true"
    )

    partial = response.content.decode()
    assert response.status_code == 422
    assert "<html" not in partial and "<details open>" in partial
    assert '<a href="#id_rotate_hf-token_value">New value: enter the new value</a>' in summary_of(partial)
    value_input = re.search(r"<input[^>]*id=\"id_rotate_hf-token_value\"[^>]*>", partial)
    assert value_input is not None and 'aria-invalid="true"' in value_input.group(0)
    assert 'hx-post="/t/acme/secrets/" hx-target="#secret-table"' in partial  # the next try is htmx again
