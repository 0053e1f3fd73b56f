"""The explorer page's files (index.html, app.js, style.css); a package only so that wheels ship them."""
