-- What the provider reported it charged for a job (PROTOCOL §5.6): the `charged` member of its
-- `job.completed` (the price) or `job.failed` (zero), as JSON `{"amount", "currency"}`; NULL
-- while the job has not ended, or when the provider did not say.
ALTER TABLE jobs ADD COLUMN charged TEXT;
