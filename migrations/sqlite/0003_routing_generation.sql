-- A counter bumped in the same transaction as every change that can alter routing (routes,
-- aliases): nodes poll this one row instead of re-reading every route.
CREATE TABLE routing_generation (
    id          BIGINT PRIMARY KEY,
    generation  BIGINT NOT NULL
);
INSERT INTO routing_generation (id, generation) VALUES (1, 0);
