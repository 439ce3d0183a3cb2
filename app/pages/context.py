"""The Context page (see `app.metric_page`)."""

from app import metric_page
from app.definitions import PAGES

metric_page.render(PAGES["context"])
