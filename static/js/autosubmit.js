// <select data-autosubmit> submits its form on change: the CSP forbids inline onchange="".
document.addEventListener("change", function (event) {
  var field = event.target;
  if (field.matches && field.matches("[data-autosubmit]") && field.form) field.form.requestSubmit();
});
