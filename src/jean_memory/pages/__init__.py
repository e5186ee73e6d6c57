"""The person's pages (home, sign-in, memories, apps, keys, account) and the administrator's.

Server-rendered HTML forms that work without JavaScript, one Jinja2 layout (`web/templates`),
CSRF on every POST, never framed, `no-store`, a strict CSP. Each module owns one area and
exposes its routes; `routes.page_routes` assembles them.
"""
