"""The Geometry page: shape of the representation space over training (layout in `app.metric_page`)."""

from app import metric_page
from app.definitions import PAGES

metric_page.render(PAGES["geometry"])
