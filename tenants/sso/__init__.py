"""Single sign-on for the console through an OpenID Connect provider (authorization code flow with PKCE).

The flow is mozilla-django-oidc's; what Frontdoor adds sits in one module per job:

- ``config``: the ``FRONTDOOR_OIDC_*`` variables read into one ``OidcSettings`` (Django-free: settings.py imports it);
- ``provider``: the provider's discovery document (fetched when first needed, cached) and the library's settings;
- ``accounts``: which account a verified e-mail signs in as (an unverified one signs in as nobody);
- ``claims``: the group claim mapped to platform staff and tenant roles, each change audited;
- ``invited``: the open invitations of that e-mail, accepted at sign-in;
- ``backend``: the one authentication backend (the code flow, and passwords while they are allowed);
- ``views`` and ``urls``: the sign-in page, the flow's two routes and sign-out at the provider (RP-initiated logout);
- ``audit``: the sign-in and sign-out events.

With no issuer configured (``settings.FRONTDOOR_OIDC is None``) none of it runs: the routes answer 404 and the sign-in
page is the password form it always was.
"""
