"""Preset regions, loaded by a data migration (0003) and editable in the admin after."""

EU = [
    "AT",
    "BE",
    "BG",
    "HR",
    "CY",
    "CZ",
    "DK",
    "EE",
    "FI",
    "FR",
    "DE",
    "GR",
    "HU",
    "IE",
    "IT",
    "LV",
    "LT",
    "LU",
    "MT",
    "NL",
    "PL",
    "PT",
    "RO",
    "SK",
    "SI",
    "ES",
    "SE",
]

PRESETS = {
    "EU": (EU, "The 27 member states of the European Union since 1 February 2020 (europa.eu, 'EU countries')."),
    "EEA": (
        EU + ["IS", "LI", "NO"],
        "The European Economic Area: the EU member states plus Iceland, Liechtenstein and Norway (EEA Agreement).",
    ),
    "Unsupported regions": (
        ["CN", "HK", "MO", "RU", "IR", "KP", "SY", "CU"],
        "The platform's list of supported countries and territories (policy revision of June "
        "2026, section 2): API access is not supported from these countries and territories. "
        "Reviewed by Legal & Compliance; update this list when the policy changes.",
    ),
}
