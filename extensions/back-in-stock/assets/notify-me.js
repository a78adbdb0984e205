// Lifecycle "Notify me": show the form for sold-out variants, post it through the app proxy, show the answer.
(function () {
  document.querySelectorAll("[data-lifecycle-notify]").forEach(function (root) {
    var form = root.querySelector("form");
    var message = root.querySelector(".lifecycle-notify__message");
    var variants = JSON.parse(root.dataset.variants || "[]");

    function follow(variantId) {
      var variant = variants.find(function (v) { return String(v.id) === String(variantId); });
      form.elements.variant_id.value = variantId;
      root.hidden = !variant || variant.available;
      message.textContent = "";
    }
    // Themes announce variant changes differently; the URL's ?variant= is the common ground.
    document.addEventListener("change", function () {
      var id = new URLSearchParams(window.location.search).get("variant");
      if (id) follow(id);
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var body = {
        email: form.elements.email.value.trim(),
        variant_id: form.elements.variant_id.value,
        locale: root.dataset.locale
      };
      form.querySelector("button").disabled = true;
      fetch(root.dataset.endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(body)
      })
        .then(function (answer) { return answer.json(); })
        .then(function (result) {
          message.textContent = result.message || result.error ||
            Object.values(result.errors || {}).flat().join(" ");
        })
        .catch(function () { message.textContent = "Something went wrong. Please try again."; })
        .finally(function () { form.querySelector("button").disabled = false; });
    });
  });
})();
