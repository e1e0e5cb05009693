/* Launch form: show the task label and the overrides that fit the chosen run kind. */
(function () {
  "use strict";
  var form = document.getElementById("launch-form");
  if (!form) return;
  function kind() {
    var checked = form.querySelector("input[name=kind]:checked");
    return checked ? checked.value : "agent";
  }
  function apply() {
    var k = kind();
    form.querySelectorAll("[data-kind-label]").forEach(function (el) { el.hidden = el.getAttribute("data-kind-label") !== k; });
    form.querySelectorAll("[data-kind-only]").forEach(function (el) { el.hidden = el.getAttribute("data-kind-only") !== k; });
  }
  form.addEventListener("change", function (e) { if (e.target.name === "kind") apply(); });
  apply();
})();
