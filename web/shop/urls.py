from django.urls import path

from . import views

urlpatterns = [
    path("orders", views.place_order, name="shop-place-order"),
    path("orders/<int:order_id>", views.order_page, name="shop-order"),
]
