"""Clinic-wide export and merge, anonymisation, CSV and FHIR."""
