// cbr report: a channel selector for each filmstrip and a full-size view on click.
// Without script every strip shows and every picture link opens the PNG itself.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  document.querySelectorAll("[data-filmstrip]").forEach(function (film) {
    var select = film.querySelector("[data-channel-select]");
    var strips = film.querySelectorAll(".strip");
    function show() {
      strips.forEach(function (strip) {
        strip.hidden = strip.getAttribute("data-channel") !== select.value;
      });
    }
    select.addEventListener("change", show);
    show();
  });
  var dialog = document.getElementById("zoom");
  if (!dialog || typeof dialog.showModal !== "function") {
    return;
  }
  var big = null;  // made on the first click: an <img> without a src never loads
  var caption = dialog.querySelector(".zoom-caption");
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("a.zoom") : null;
    if (!link) {
      return;
    }
    event.preventDefault();
    var small = link.querySelector("img");
    if (!big) {
      big = document.createElement("img");
      dialog.querySelector(".zoom-body").appendChild(big);
    }
    big.src = link.getAttribute("href");
    big.alt = small ? small.alt : "";
    caption.textContent = small ? small.alt : "";
    dialog.showModal();
  });
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog || event.target === big) {
      dialog.close();
    }
  });
})();
