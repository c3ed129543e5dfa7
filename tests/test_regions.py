import pytest

from memo_service.developers.models import Region

pytestmark = pytest.mark.django_db


def test_preset_regions_are_loaded_with_their_sources():
    regions = {r.name: r for r in Region.objects.all()}
    assert set(regions) == {"EU", "EEA", "Unsupported regions"}
    assert len(regions["EU"].countries) == 27 and all(r.source for r in regions.values())
    eea = {c.code for c in regions["EEA"].countries}
    assert eea == {c.code for c in regions["EU"].countries} | {"IS", "LI", "NO"}


def test_regions_are_editable_in_the_admin(admin_client):
    eu = Region.objects.get(name="EU")
    response = admin_client.post(
        f"/admin/developers/region/{eu.pk}/change/",
        {"name": "EU", "countries": [c.code for c in eu.countries] + ["CH"], "source": "edited"},
    )
    assert response.status_code == 302
    assert "CH" in {c.code for c in Region.objects.get(name="EU").countries}
