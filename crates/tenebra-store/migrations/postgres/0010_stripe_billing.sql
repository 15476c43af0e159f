-- The Stripe customer a tenant's usage is billed to (`cus_...`); NULL until the operator
-- maps it. Meter events of an unmapped tenant wait for the mapping.
ALTER TABLE tenants ADD COLUMN stripe_customer_id TEXT;

-- What became of each usage record's meter event: delivered (`sent`), too old for the
-- provider's window (`expired`), or refused by the provider (`refused`, with its reason in
-- `detail`). Expired and refused records are never sent again unless the operator asks.
ALTER TABLE meter_exports ADD COLUMN outcome TEXT NOT NULL DEFAULT 'sent'
    CHECK (outcome IN ('sent', 'expired', 'refused'));
ALTER TABLE meter_exports ADD COLUMN detail TEXT;
