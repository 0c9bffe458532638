"""Model runners: plain classes that load and run models, plus thin BentoML services."""
