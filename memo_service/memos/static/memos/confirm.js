// Every admin form with data-confirm asks before it is sent (the admin's
// Content-Security-Policy runs no inline handlers).
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) { event.preventDefault(); }
}, true);
