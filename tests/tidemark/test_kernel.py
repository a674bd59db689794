"""The shared kernel (tidemark/): one root error, and the old homes of its names keep working."""

from __future__ import annotations

import features.errors
import features.settings
import monitoring.errors
import pipelines.errors
import serving.errors
import tidemark.errors
import tidemark.settings


def test_every_package_roots_its_errors_in_the_kernel() -> None:
    for root in (features.errors.FeatureStoreError, monitoring.errors.MonitoringError, serving.errors.ServingError,
                 pipelines.errors.TrainingError, pipelines.errors.RegistryError):
        assert issubclass(root, tidemark.errors.TidemarkError), root


def test_the_feature_stores_config_error_is_both_a_store_error_and_a_config_error() -> None:
    # callers that fall back when the store fails (serving's scorer) still catch it as a store error
    assert issubclass(features.errors.ConfigError, features.errors.FeatureStoreError)
    assert issubclass(features.errors.ConfigError, tidemark.errors.ConfigError)


def test_the_old_names_are_the_kernels_own() -> None:
    assert features.errors.TidemarkError is tidemark.errors.TidemarkError
    assert features.settings.Settings is tidemark.settings.Settings
    assert features.settings.SparkSettings is tidemark.settings.SparkSettings
