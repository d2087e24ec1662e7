//! What the agent knows about a pod's containers, and the `PodStatus` it
//! reports from that. Pure: the runner mutates a [`PodState`] and publishes
//! [`pod_status`] of it.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started: Option<Timestamp>,
    pub finished: Timestamp,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started: Timestamp,
        pid: u32,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restarts: i32,
    /// No more restarts will follow (restartPolicy, or the pod is going away).
    pub done: bool,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Self {
        Container {
            name: name.into(),
            image: image.into(),
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last: None,
            restarts: 0,
            done: false,
        }
    }

    fn succeeded(&self) -> bool {
        self.done && matches!(&self.state, State::Terminated(t) if t.exit_code == 0)
    }

    fn failed_for_good(&self) -> bool {
        self.done && !self.succeeded()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodState {
    pub init: Vec<Container>,
    pub main: Vec<Container>,
    pub start_time: Timestamp,
    pub ip: String,
}

impl PodState {
    pub fn container_mut(&mut self, init: bool, i: usize) -> &mut Container {
        if init {
            &mut self.init[i]
        } else {
            &mut self.main[i]
        }
    }

    /// Pending until every init container succeeded and a main container
    /// started; Succeeded/Failed once no container will run again.
    pub fn phase(&self) -> &'static str {
        if self.init.iter().any(Container::failed_for_good) {
            return "Failed";
        }
        if !self.init.iter().all(Container::succeeded) {
            return "Pending";
        }
        if self.main.iter().all(|c| c.done) {
            return if self.main.iter().all(Container::succeeded) {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        let started = |c: &Container| !matches!(c.state, State::Waiting { .. }) || c.restarts > 0;
        if self.main.iter().any(started) {
            "Running"
        } else {
            "Pending"
        }
    }

    fn all_running(&self) -> bool {
        !self.main.is_empty()
            && self
                .main
                .iter()
                .all(|c| matches!(c.state, State::Running { .. }))
    }
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started.map(time),
        finished_at: Some(time(t.finished)),
        container_id: t.pid.map(container_id),
    }
}

fn container_id(pid: u32) -> String {
    format!("agent://{pid}")
}

fn container_status(c: &Container) -> ContainerStatus {
    let (state, id) = match &c.state {
        State::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            None,
        ),
        State::Running { started, pid } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time(*started)),
                }),
                ..Default::default()
            },
            Some(container_id(*pid)),
        ),
        State::Terminated(t) => (
            ContainerState {
                terminated: Some(terminated(t)),
                ..Default::default()
            },
            t.pid.map(container_id),
        ),
    };
    let running = matches!(c.state, State::Running { .. });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: id,
        ready: running,
        started: Some(running),
        restart_count: c.restarts,
        state: Some(state),
        last_state: c.last.as_ref().map(|t| ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, now: Timestamp) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(time(now)),
        ..Default::default()
    }
}

/// The status the kubelet would report for this state.
pub fn pod_status(s: &PodState, now: Timestamp) -> PodStatus {
    let initialized = s.init.iter().all(Container::succeeded);
    let ready = s.all_running();
    PodStatus {
        phase: Some(s.phase().into()),
        host_ip: Some(s.ip.clone()),
        host_ips: Some(vec![HostIP { ip: s.ip.clone() }]),
        pod_ip: Some(s.ip.clone()),
        pod_ips: Some(vec![PodIP { ip: s.ip.clone() }]),
        start_time: Some(time(s.start_time)),
        conditions: Some(vec![
            condition("PodScheduled", true, now),
            condition("Initialized", initialized, now),
            condition("ContainersReady", ready, now),
            condition("Ready", ready, now),
        ]),
        init_container_statuses: (!s.init.is_empty())
            .then(|| s.init.iter().map(container_status).collect()),
        container_statuses: Some(s.main.iter().map(container_status).collect()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: Some("msg".into()),
            started: Some(Timestamp::UNIX_EPOCH),
            finished: Timestamp::UNIX_EPOCH,
            pid: Some(42),
        })
    }

    fn pod(main: Vec<(State, bool)>) -> PodState {
        PodState {
            init: vec![],
            main: main
                .into_iter()
                .enumerate()
                .map(|(i, (state, done))| Container {
                    state,
                    done,
                    ..Container::new(&format!("c{i}"), "img")
                })
                .collect(),
            start_time: Timestamp::UNIX_EPOCH,
            ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn phases_follow_containers() {
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        let running = State::Running {
            started: Timestamp::UNIX_EPOCH,
            pid: 7,
        };
        assert_eq!(pod(vec![(waiting.clone(), false)]).phase(), "Pending");
        assert_eq!(
            pod(vec![(running.clone(), false), (waiting, false)]).phase(),
            "Running"
        );
        assert_eq!(
            pod(vec![(term(0), true), (running, false)]).phase(),
            "Running"
        );
        assert_eq!(
            pod(vec![(term(0), true), (term(0), true)]).phase(),
            "Succeeded"
        );
        assert_eq!(
            pod(vec![(term(0), true), (term(3), true)]).phase(),
            "Failed"
        );
        // Failed but about to restart (OnFailure/Always): still running.
        assert_eq!(pod(vec![(term(3), false)]).phase(), "Running");
    }

    #[test]
    fn failed_init_container_fails_the_pod() {
        let mut p = pod(vec![(
            State::Waiting {
                reason: "PodInitializing".into(),
                message: None,
            },
            false,
        )]);
        p.init.push(Container {
            state: term(1),
            done: true,
            ..Container::new("init", "img")
        });
        assert_eq!(p.phase(), "Failed");
        p.init[0] = Container {
            state: term(0),
            done: true,
            ..Container::new("init", "img")
        };
        assert_eq!(p.phase(), "Pending");
    }

    #[test]
    fn status_carries_exit_code_message_and_readiness() {
        let st = pod_status(&pod(vec![(term(3), true)]), Timestamp::UNIX_EPOCH);
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        let cs = &st.container_statuses.unwrap()[0];
        let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (t.exit_code, t.reason.as_deref(), t.message.as_deref()),
            (3, Some("Error"), Some("msg"))
        );
        assert_eq!(cs.container_id.as_deref(), Some("agent://42"));
        assert!(!cs.ready);
        let running = pod(vec![(
            State::Running {
                started: Timestamp::UNIX_EPOCH,
                pid: 9,
            },
            false,
        )]);
        let st = pod_status(&running, Timestamp::UNIX_EPOCH);
        let ready = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }
}
