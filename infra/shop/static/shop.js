// The demo shop's pages, on the storefront kit as a shop would use it.
import { createRecs } from "/kit/recs.js";

const config = JSON.parse(document.getElementById("shop-config").textContent);
const label = (id) => config.labels[id] || `Product ${id}`;
const recs = createRecs({
  consent: config.consent,
  timeoutMs: config.timeoutMs,
  itemUrl: (id) => `/shop/item?id=${encodeURIComponent(id)}`,
  itemLabel: label,
});
const cart = JSON.parse(sessionStorage.getItem("shop.cart") || "{}");
const saveCart = () => {
  sessionStorage.setItem("shop.cart", JSON.stringify(cart));
  document.getElementById("count").textContent = String(Object.values(cart).reduce((a, b) => a + b, 0));
};
saveCart();

async function call(name, body) {
  const r = await fetch(`/shop/api/${name}`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body || {}),
  });
  return [r.status, await r.json()];
}

for (const el of document.querySelectorAll("[data-slot]")) {
  const kind = el.dataset.slot;
  recs.slot(el, {
    k: 8, label: el.getAttribute("aria-labelledby") && document.getElementById(el.getAttribute("aria-labelledby")).textContent,
    contextItem: el.dataset.context, personal: kind !== "trending", fallback: config.fallback,
  }).then((answer) => {
    // fallback: the shop's own list (no answer in time); a reason: the service's named fallback
    // (anonymous and new shoppers get trending by design; "user_read_failed" is degraded).
    el.dataset.state = answer.fallback ? "fallback" : "served";
    el.dataset.reason = answer.reason || "";
    el.dataset.variant = answer.variant || "";
  });
}
if (config.item) recs.view(config.item);

document.addEventListener("click", async (event) => {
  const target = event.target.closest("button");
  if (!target) return;
  if (target.dataset.add) {
    cart[target.dataset.add] = (cart[target.dataset.add] || 0) + 1;
    saveCart();
    recs.addToCart(target.dataset.add);
    target.textContent = "Added";
  } else if (target.id === "signin") {
    await call("signin", { user_id: document.getElementById("shopper").value });
    location.reload();
  } else if (target.id === "signout") {
    await call("signout");
    location.reload();
  } else if (target.id === "accept") {
    await call("consent", { consent: true });
    recs.setConsent(true);
    document.getElementById("consent").remove();
  } else if (target.id === "checkout") {
    const lines = Object.entries(cart).map(([item_id, quantity]) => ({ item_id, quantity, rec_id: recs.attribution(item_id) }));
    const [status, answer] = await call("checkout", { lines });
    const out = document.getElementById("order");
    out.textContent = status === 200 ? `Order ${answer.order_id}: ${answer.accepted} line(s) confirmed` : answer.message;
    if (status === 200) {
      for (const k of Object.keys(cart)) delete cart[k];
      saveCart();
      renderCart();
    }
  }
});

function renderCart() {
  const list = document.getElementById("cart-lines");
  if (!list) return;
  list.replaceChildren(...Object.entries(cart).map(([id, n]) => {
    const li = document.createElement("li");
    li.dataset.cartItem = id;
    li.textContent = `${label(id)} x ${n}`;
    return li;
  }));
}
renderCart();
