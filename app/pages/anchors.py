"""The Anchors page (see `app.metric_page`)."""

from app import metric_page
from app.definitions import PAGES

metric_page.render(PAGES["anchors"])
