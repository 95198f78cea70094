//! The writer's queue: commands wait per account and are taken into a group in turn, one per
//! account at a time, so that a backlog of one account delays another account's command by at
//! most about one group (docs/ARCHITECTURE.md, "A fair writer").

use std::collections::{HashMap, VecDeque};

/// Commands waiting for the writer, by account, in arrival order within each account.
#[derive(Debug)]
pub struct FairQueue<T> {
    queues: HashMap<String, VecDeque<T>>,
    /// The accounts with waiting commands, in the order their turns come.
    turns: VecDeque<String>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue { queues: HashMap::new(), turns: VecDeque::new(), len: 0 }
    }
}

impl<T> FairQueue<T> {
    /// Queues `item` behind the others of its account, which `account_of` reads from it.
    pub fn push(&mut self, item: T, account_of: impl Fn(&T) -> &str) {
        let account = account_of(&item);
        match self.queues.get_mut(account) {
            Some(queue) => queue.push_back(item),
            None => {
                let account = account.to_string();
                self.turns.push_back(account.clone());
                self.queues.insert(account, VecDeque::from([item]));
            }
        }
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `most` items, one per account in turn; an account whose turn came and that still
    /// waits goes to the back of the line.
    pub fn take(&mut self, most: usize, into: &mut Vec<T>) {
        while into.len() < most
            && let Some(account) = self.turns.pop_front()
        {
            let queue = self.queues.get_mut(&account).expect("an account in line has a queue");
            into.push(queue.pop_front().expect("an account in line has a command"));
            self.len -= 1;
            if queue.is_empty() {
                self.queues.remove(&account);
            } else {
                self.turns.push_back(account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_of_one_account_takes_turns_with_the_others_in_arrival_order_each() {
        let mut queue = FairQueue::default();
        fn account<'a>(item: &'a (&'static str, String)) -> &'a str {
            item.0
        }
        for n in 0..5 {
            queue.push(("flood", format!("f{n}")), account);
        }
        queue.push(("quiet", "q0".to_string()), account);
        queue.push(("other", "o0".to_string()), account);
        queue.push(("quiet", "q1".to_string()), account);
        let names = |items: Vec<(&str, String)>| items.into_iter().map(|(_, name)| name).collect::<Vec<_>>();
        let mut group = Vec::new();
        queue.take(4, &mut group);
        assert_eq!(names(group), ["f0", "q0", "o0", "f1"]);
        assert_eq!(queue.len(), 4);
        let mut next = Vec::new();
        queue.take(10, &mut next);
        assert_eq!(names(next), ["q1", "f2", "f3", "f4"]);
        assert!(queue.is_empty());
    }
}
