from django.urls import path

from . import views

urlpatterns = [
    path("", views.shop_home, name="shop-home"),
    path("orders", views.place_order, name="shop-place-order"),
    # Public pages, by the order's random token (never its sequential id: links cannot be guessed).
    path("orders/<slug:token>", views.order_page, name="shop-order"),
    path("orders/<slug:token>.json", views.order_json, name="shop-order-json"),
    path("orders/<slug:token>/events", views.order_events, name="shop-order-events"),
]
