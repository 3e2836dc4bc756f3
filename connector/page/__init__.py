"""The status page of `connector run`: `GET /` and `GET /records/{id}`, read-only HTML for people.

Server-rendered from the Jinja2 templates in `templates/`; no build step, nothing fetched from
elsewhere (it works offline, and behind a proxy at any path: its links are relative). A little
inline JavaScript filters the failures as one types and refreshes the page without losing what is
typed; without JavaScript the search is a plain GET form (`?q=`) and a `<meta>` refresh reloads.
"""

from connector.page.routes import PATHS, StatusPage, is_page

__all__ = ["PATHS", "StatusPage", "is_page"]
