-- layers: calls
-- One element per call_spy_start (docs/metrics.md#pbxspy_sessions).

SELECT
    call_id,
    -- per spying and spied-on agent, each start with its end (pbx_session_ends)
    arrayFlatten(arrayMap(
        (starts, ends) -> arrayMap((s, e) -> (s.1, s.2, s.3, s.4, s.5, s.6, s.7, e),
            starts, pbx_session_ends(arrayMap(s -> s.1, starts), ends)),
        pair_starts, pair_ends)) AS spies
FROM
(
    SELECT
        call_id,
        arrayMap(pair -> arrayFilter(s -> (s.3, s.4) = pair, starts), pairs) AS pair_starts,
        arrayMap(pair -> arrayMap(e -> e.1, arrayFilter(e -> (e.2, e.3) = pair, ends)), pairs) AS pair_ends
    FROM
    (
        SELECT
            call_id,
            arraySort(groupArrayIf(
                (received_at, seq, spying_userid, spying_target_userid, spying_exten, spying_target_exten,
                 toString(spy_type)),
                event = 'call_spy_start')) AS starts,
            arraySort(groupArrayIf((received_at, spying_userid, spying_target_userid), event = 'call_spy_end')) AS ends,
            arrayDistinct(arrayMap(s -> (s.3, s.4), starts)) AS pairs
        FROM pbx.call_events(layer = {layer:String}, refresh = {refresh:UInt8}, whole = {whole:UInt8})
        WHERE event IN ('call_spy_start', 'call_spy_end') AND call_id != ''
        GROUP BY call_id
        HAVING notEmpty(starts)
    )
)
