from django.urls import path

from . import views

urlpatterns = [
    path("", views.shop_home, name="shop-home"),
    path("orders", views.place_order, name="shop-place-order"),
    path("orders/<int:order_id>", views.order_page, name="shop-order"),
    path("orders/<int:order_id>.json", views.order_json, name="shop-order-json"),
    path("orders/<int:order_id>/events", views.order_events, name="shop-order-events"),
]
