"""The Anchors page: anchor similarity and anchor drift over training (layout in `app.metric_page`)."""

from app import metric_page
from app.definitions import PAGES

metric_page.render(PAGES["anchors"])
