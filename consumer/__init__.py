"""The Imaging Document Consumer edge proxy: order -> PIX -> registry -> manifest -> images ->
reconciled into the local PACS."""
