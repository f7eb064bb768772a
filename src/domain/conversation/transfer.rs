//! Transfers: how `INTERNAL_TRANSFER_EVENT` entries and exits open and close agent
//! segments, and which departures from the prescribed order they record as anomalies.

use super::*;

impl Conversation {
    pub(super) fn transfer(
        &mut self,
        tt: TransferType,
        transition: Transition,
        p: &Participant,
        at: Timestamp,
        seq: u64,
    ) {
        let who = p.identity.as_str();
        // Messages show the identity cut to a bounded length.
        let shown = names(&[who]);
        let label = match tt {
            TransferType::Na => "NA",
            TransferType::Cold => "COLD",
            TransferType::Warm => "WARM",
            TransferType::Redial => "redial",
        };
        match transition {
            Transition::Entry => {
                let already = self
                    .agents
                    .iter()
                    .any(|a| a.identity == who && a.is_active());
                let (any_other, others_named) = {
                    let others: Vec<&str> = self
                        .active_agents()
                        .into_iter()
                        .filter(|a| *a != who)
                        .collect();
                    (!others.is_empty(), names(&others))
                };
                match tt {
                    TransferType::Na if self.started_at.is_some() => self.anomaly(
                        "repeated_na_entry",
                        format!("NA entry for {shown}, but the conversation had already started: send NA entry once, then COLD or WARM for later agents, or redial after a drop"),
                        seq,
                    ),
                    TransferType::Cold if any_other => self.anomaly(
                        "cold_entry_while_agent_active",
                        format!(
                            "COLD entry for {shown} while {} still active without an exit: a cold transfer hands over to one agent at a time, so send the COLD exit first",
                            others_named
                        ),
                        seq,
                    ),
                    TransferType::Redial if already => self.anomaly(
                        "redial_while_active",
                        format!("redial entry for {shown}, who is still active: a redial follows the agent's NA exit after a drop"),
                        seq,
                    ),
                    TransferType::Cold | TransferType::Warm if self.started_at.is_none() => self.anomaly(
                        "transfer_before_start",
                        format!("{label} entry for {shown} before the conversation started: the NA entry of the first agent comes first"),
                        seq,
                    ),
                    _ if already => self.anomaly(
                        "entry_while_active",
                        format!("{label} entry for {shown}, who is already active"),
                        seq,
                    ),
                    _ => {}
                }
                if let Some(exit_seq) = self.na_exit_seq
                    && tt != TransferType::Redial
                {
                    self.anomaly(
                        "entry_after_na_exit",
                        format!("{label} entry for {shown} after the last agent's NA exit (event {exit_seq}): only a redial entry may follow it"),
                        seq,
                    );
                }
                match tt {
                    TransferType::Cold => self.transfers.cold += 1,
                    TransferType::Warm => self.transfers.warm += 1,
                    TransferType::Redial => self.transfers.redial += 1,
                    TransferType::Na => {}
                }
                if self.started_at.is_none() {
                    self.started_at = Some(at);
                }
                self.na_exit_seq = None;
                let agent = self.agent_mut(p);
                if !already {
                    agent.segments.push(Segment {
                        transfer_type: tt,
                        started_at: at,
                        ended_at: None,
                    });
                }
            }
            Transition::Exit => {
                let agent = self
                    .agents
                    .iter_mut()
                    .find(|a| a.identity == who && a.is_active());
                match agent {
                    Some(agent) => {
                        if let Some(segment) = agent.segments.last_mut() {
                            segment.ended_at = Some(at);
                        }
                    }
                    None => self.anomaly(
                        "exit_without_entry",
                        format!("{label} exit for {shown}, who was not active (never entered, or already left)"),
                        seq,
                    ),
                }
                if tt == TransferType::Na {
                    let still = names(&self.active_agents());
                    if still.is_empty() {
                        self.na_exit_seq = Some(seq);
                    } else {
                        self.anomaly(
                            "na_exit_with_agents_active",
                            format!("NA exit for {shown} while {still} still active: the NA exit is for the last agent to leave"),
                            seq,
                        );
                    }
                }
            }
        }
    }
}
