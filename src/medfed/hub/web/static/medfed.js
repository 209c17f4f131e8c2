// medfed's page behaviour without inline script (the pages' Content-Security-Policy
// allows scripts from /static only): a control marked data-autosubmit submits its form
// when it changes; a link marked data-back goes back in the history.
document.addEventListener("change", function (event) {
  var target = event.target;
  if (target instanceof HTMLElement && target.hasAttribute("data-autosubmit") && target.form) {
    target.form.submit();
  }
});
document.addEventListener("click", function (event) {
  var target = event.target;
  var link = target instanceof Element ? target.closest("a[data-back]") : null;
  if (link && window.history.length > 1) {
    event.preventDefault();
    window.history.back();
  }
});
