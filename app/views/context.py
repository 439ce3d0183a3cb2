"""The Context alignment page: how context vectors g = h − e align over training (layout in `app.metric_page`)."""

from app import metric_page
from app.definitions import PAGES

metric_page.render(PAGES["context"])
